"""Q4. When should one freeze, fine-tune or train from scratch? The question's
contract (`study.question`), from the modules that hold its parts: `design`
(the task, the arms and their rate grids, the plan), `analysis`, `claims`,
`figures` and `section`."""

from experiments.transfer.claims import claims
from experiments.transfer.design import NAME, QUESTION, QUICK_SEEDS, SEEDS, TEXT, TUNING_SEEDS, plan
from experiments.transfer.figures import figures
from experiments.transfer.section import section

__all__ = ["NAME", "QUESTION", "QUICK_SEEDS", "SEEDS", "TEXT", "TUNING_SEEDS", "plan", "claims", "figures", "section"]
