"""Q4. Fine-tuning versus feature extraction (S-questions, S-tfjs, S-finetune, S-tricks)

A source MLP (4 hidden layers of 64 ReLU units) is pretrained once per seed
on a `Mixture` source task (its defaults: 8 classes, each the union of 3
Gaussian clusters in a 6-dimensional subspace of R^12), beside a linear
classifier on the raw inputs; its weights are kept in
`results/transfer-params.npz`. Every strategy then trains on the same target
data and seeds, over a grid of target sizes (examples per class) x
similarity to the source (see `study.data.Mixture`): 400 minibatches of 64
in 10 "epochs" of 40 (800 for the arms that train a head alone, and
staged; four times as many at 256 and 1024 per class, in programs of their
own), sizes being a traced prefix of one training sample. Every rate is
constant, then decays to 0 along a cosine over the last 20% of each phase,
so convergence is read where the rate is still constant.

Every arm is tuned: its learning rates (Adam) come from a grid, trained on
the tuning seeds only; per (size, similarity, strategy) the rates with the
best mean final accuracy on their validation sample are marked `selected`
and trained on the evaluation seeds, which the verdicts read. Every new
head beside trained layers has its own rate (`head_lr`), crossed with the
body's grid (`HEAD_RATES`; staged's head, trained alone first, has its own).

Strategies, with the number of top layers they train (`trainable_layers`,
5 = all):

- `scratch`: random initialization, every layer at one rate;
- `reinit`: finetune_all's recipe (a body rate and a head rate) from
  re-initialized weights; at equal rates it is scratch's runs (one arm);
- `feature_extraction`: a new head on the frozen last hidden layer;
- `feature_extraction_early`: a new head on the frozen second hidden layer;
- `random_features`: a new head on a frozen random body of the same shape
  (what pretraining adds to feature extraction);
- `finetune_top`: the top k = 2, 3, 4 layers (new head included);
- `finetune_all`: every layer from the pretrained weights;
- `staged`: the head alone for 8 epochs, then the top hidden layer and the
  head together at the body rate (S-finetune's recipe, LP-FT);
- `staged_small`: the same recipe at S-finetune's very small block rates
  (a rate variant: a claim's arm, not a strategy of the phase diagram);
- `wide_head`: finetune_all with 9 outputs for the 6 classes.

S-tfjs's two modes (finetune_top k=2 and finetune_all) also train one
epoch at a constant rate, tuned on validation after that epoch, at the
largest size (table `first-epoch`): its first-epoch claims.

Frozen layers are out of the optimizer (`optax.partition`), so they leave
the backward pass, and without dropout they are applied to the data once
per phase (`study.loop.frozen_view`): feature extraction trains a linear
model on fixed features, held against a converged L-BFGS linear probe on
the same features (`probe_acc`).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from study.config import Setup
from study.data import Mixture
from study.runner import MAIN, Program


NAME = "transfer"


TEXT = Path(__file__).parents[1] / "text" / f"{NAME}.md"  # the report's prose


QUESTION = "When should one freeze, fine-tune or train from scratch?"


HIDDEN = (64, 64, 64, 64)


EARLY = 2  # hidden layers under feature_extraction_early's head


WIDE = 9  # outputs of wide_head for the target's 6 classes


SOURCE_TASK = Mixture()


TARGET_TASK = Mixture(target=True, classes=6, clusters=4, n_train=1024, n_eval=500)


SIZES = (4, 16, 64, 256, 1024)  # examples per class


SIMILARITIES = (0.0, 0.25, 0.5, 0.75, 1.0)


SEEDS, TUNING_SEEDS, QUICK_SEEDS = 32, 8, 2  # evaluation seeds from the power analysis (README)


SOURCE_EPOCHS, EPOCHS, STEPS, BATCH, EVALS = 40, 10, 40, 64, 5


QUICK_SOURCE_EPOCHS, QUICK_EPOCHS, QUICK_STEPS = 2, 5, 8


DECAY = 0.2  # the last share of each phase over which the rate decays to 0 (constant before)


# At 10 epochs the constant-rate validation accuracy of the larger sizes still
# rose (a 4-seed pilot at 40 epochs: scratch, finetune_all and staged at 1024
# per class levelled off between epochs 20 and 60; the full run that trained 64
# per class at 10 epochs: a median rise of 0.36 pt from 60% to 80% of training
# there, 0.04 at 16): these sizes train longer.
LONG_SIZES, LONG_FACTOR = (64, 256, 1024), 4


LR = 1e-3  # the source's rate


# Adam's rate grids, log-spaced around the rates each kind of arm needs (a
# pilot and the previous full run placed them, so that validation's optimum
# lies inside each grid). They train on the tuning seeds only.
# Scratch's and a head alone's reach one step lower than the run that placed
# them, where scratch chose its lowest rate in 4 cells (64 and 256 per class)
# and random features in 5 of 5 at 64 per class (each of these five above its
# neighbour beyond the tuning seeds' 95% interval). The fine-tuned bodies'
# grids then reach one step further where their chosen rates rose on an end
# beyond that interval: finetune_all's lower (1024 per class, similarity 1),
# finetune_top k=2's lower (64 and 256 per class), k=3's higher (4 per class,
# similarity 0: 1.8 pt) and lower, k=4's lower (its low end rose at similarity 1).
SCRATCH_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # every layer from random weights (scratch)


REINIT_RATES = (1e-3, 3e-3, 1e-2, 3e-2)  # reinit's layers below the head


TOP_RATES = {2: (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), 3: (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),  # finetune_top k
             4: (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)}


BODY_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # finetune_all's and wide_head's pretrained layers (1e-4 lost 5-20 pt)


# A new head beside trained layers: every such arm crosses them with its body's.
# The grids reach one step lower than the run that placed them, where its
# chosen rates sat on the low end in 7-15 of 25 cells (heads alone,
# finetune_top k=2, reinit, every head): slower rates win at the longer budget.
HEAD_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


STAGED_RATES = (3e-3, 1e-2, 3e-2, 1e-1)  # staged's unfrozen block, tuned


SMALL_BLOCK_RATES = (1e-4, 1e-3)  # staged_small's block: S-finetune's "very small" rate, as its recipe states


STAGED_HEAD_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # staged's head, trained alone first


# The arms whose steps are cheapest (a head alone, and staged, mostly a head
# and one layer) train this many times the epochs: at the shared budget their
# validation accuracy still rose at the largest sizes.
SLOW_ARMS_FACTOR = 2


PROBE_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)  # a new head alone on standardized frozen features


CONDITION = ["n_target", "similarity", "strategy", "trainable_layers", "lr", "head_lr"]


LAYERS = len(HIDDEN) + 1


FROZEN_K = 2  # S-tfjs froze 3 of its 5 layers, training the top 2


FROZEN, NO_FREEZE, REINITIALIZED = f"finetune_top k={FROZEN_K}", "finetune_all", "scratch"  # S-tfjs's modes


FIRST_EPOCH = "first-epoch"  # the table of S-tfjs's two modes trained one epoch at a constant rate


VARIANTS = {"staged_small": "staged"}  # a recipe at a rate of the claim's, not a strategy of the phase diagram


def with_heads(rates) -> list[tuple[float, float]]:
    """A body grid crossed with `HEAD_RATES`: (lr, head_lr) pairs."""
    return list(itertools.product(rates, HEAD_RATES))


def arms(epochs: int) -> list[dict]:
    """Every strategy's static setup fields, its epochs and its (lr, head_lr) grid."""
    pretrained = dict(pretrained=True, own_head_lr=True, epochs=epochs)
    alone = [(lr, lr) for lr in PROBE_RATES]  # the head is the only trained layer: lr is its rate
    longer = SLOW_ARMS_FACTOR * epochs
    head_alone = dict(trainable=1, standardize_features=True, epochs=longer)
    staged = dict(pretrained, trainable=2, head_first=longer // EVALS * (EVALS // 2), epochs=longer)  # head: half
    return [dict(strategy="scratch", rates=[(lr, lr) for lr in SCRATCH_RATES], epochs=epochs),
            dict(strategy="reinit", rates=with_heads(REINIT_RATES), own_head_lr=True, epochs=epochs),
            dict(strategy="feature_extraction", rates=alone, pretrained=True, **head_alone),
            dict(strategy="feature_extraction_early", rates=alone, pretrained=True, hidden=HIDDEN[:EARLY],
                 **head_alone),
            dict(strategy="random_features", rates=alone, **head_alone),
            *[dict(strategy="finetune_top", rates=with_heads(TOP_RATES[k]), trainable=k, **pretrained)
              for k in range(2, LAYERS)],
            dict(strategy="finetune_all", rates=with_heads(BODY_RATES), **pretrained),
            dict(strategy="staged", rates=list(itertools.product(STAGED_RATES, STAGED_HEAD_RATES)), **staged),
            dict(strategy="staged_small", rates=list(itertools.product(SMALL_BLOCK_RATES, STAGED_HEAD_RATES)),
                 **staged),
            dict(strategy="wide_head", rates=with_heads(BODY_RATES), n_out=WIDE, **pretrained)]


def arm_label(strategy: str, k: int) -> str:
    """A strategy, with k for finetune_top."""
    return f"finetune_top k={k}" if strategy == "finetune_top" else strategy


ARMS = [arm_label(a["strategy"], a.get("trainable") or LAYERS) for a in arms(EPOCHS)]  # the order ties go by


def plan(seeds: int, epochs: int | None = None, quick: bool = False) -> list[Program]:
    """Two source programs (the MLP, whose weights are kept, and a linear
    classifier), the converged linear probe on the MLP's frozen last hidden
    layer (`probe` table), then one program per strategy shape; sizes,
    similarities, learning rates and seeds are traced."""
    epochs = epochs or (QUICK_EPOCHS if quick else EPOCHS)
    if epochs % EVALS:
        raise ValueError(f"{NAME} scores every {EVALS}th of its epochs: the epochs must be a multiple of {EVALS}, "
                         f"got {epochs}")
    source_epochs = QUICK_SOURCE_EPOCHS if quick else SOURCE_EPOCHS
    sizes, similarities = (SIZES[::4], SIMILARITIES[::4]) if quick else (SIZES, SIMILARITIES)
    common = dict(init="glorot_uniform", activation="relu")
    source_steps = SOURCE_TASK.n_train * SOURCE_TASK.classes // BATCH
    source_runs = pd.DataFrame([{"model": "mlp", "seed": s, "data_seed": s, "lr": LR,
                                 "n_target": SOURCE_TASK.n_train, **common} for s in range(seeds)])
    programs = [Program(f"source {model}", Setup(task=SOURCE_TASK, hidden=hidden, n_out=SOURCE_TASK.classes,
                                                 epochs=source_epochs, evals=source_epochs, batch_size=BATCH,
                                                 steps_per_epoch=source_steps, keep_params=bool(hidden)),
                        source_runs.assign(model=model), table="source")
                for model, hidden in [("mlp", HIDDEN), ("linear", ())]]
    cells = pd.DataFrame([{"n_target": n, "similarity": s, "seed": seed, "data_seed": seed, "lr": 0.0, **common}
                          for n, s, seed in itertools.product(sizes, similarities, range(seeds))])
    probe = Setup(task=TARGET_TASK, hidden=HIDDEN, n_out=TARGET_TASK.classes, pretrained=True, trainable=1,
                  epochs=1, evals=1, batch_size=BATCH, steps_per_epoch=1, scored=("probe_acc",))
    programs.append(Program("linear probe", probe, cells, table="probe", start_from="source mlp"))
    budgets = [(sizes, 1)] if quick else [(tuple(n for n in sizes if n not in LONG_SIZES), 1),
                                          (LONG_SIZES, LONG_FACTOR)]

    def strategies(epochs: int) -> list[dict]:
        return [quick_arm(arm) if quick else arm for arm in arms(epochs)]

    for group, factor in budgets:
        suffix = f" ({factor}x epochs)" if factor > 1 else ""
        programs += [arm_program(arm, group, similarities, seeds, suffix=suffix) for arm in strategies(factor * epochs)]
    first = [dict(arm, epochs=1, evals=1, decay=0.0, final_eval=False, scored=("val_acc",)) for arm in strategies(epochs)
             if arm_label(arm["strategy"], arm.get("trainable") or LAYERS) in (FROZEN, NO_FREEZE)]
    return programs + [arm_program(arm, sizes[-1:], similarities, seeds, FIRST_EPOCH) for arm in first]


def quick_arm(arm: dict) -> dict:
    """An arm as `--quick` trains it: fewer steps, and each rate axis cut to
    its middle two values (still a grid to tune, at rates that train)."""
    middle = [sorted(set(axis))[(len(set(axis)) - 1) // 2:][:2] for axis in zip(*arm["rates"])]
    rates = [pair for pair in arm["rates"] if all(rate in keep for rate, keep in zip(pair, middle))]
    return dict(arm, steps_per_epoch=QUICK_STEPS, rates=rates)


def arm_program(arm: dict, sizes, similarities, seeds: int, table: str = MAIN, suffix: str = "") -> Program:
    """One strategy's program: its setup (the arm's fields over Q4's
    defaults) and its runs over sizes x similarities x its rate grid x
    seeds, the rates tuned on validation; `suffix` ends its label."""
    arm = dict(arm)
    strategy, rates = arm.pop("strategy"), arm.pop("rates")
    defaults = dict(task=TARGET_TASK, hidden=HIDDEN, n_out=TARGET_TASK.classes, scored=("eval_acc", "val_acc"),
                    evals=EVALS, batch_size=BATCH, steps_per_epoch=STEPS, decay=DECAY, final_eval=True)
    setup = Setup(**{**defaults, **arm})
    k = setup.trainable or LAYERS
    common = dict(init="glorot_uniform", activation="relu")
    runs = pd.DataFrame([{"n_target": n, "similarity": s, "strategy": strategy, "trainable_layers": k,
                          "lr": lr, "head_lr": head_lr, "seed": seed, "data_seed": seed, **common}
                         for n, s, (lr, head_lr), seed in itertools.product(sizes, similarities, rates, range(seeds))])
    label = ("first epoch " if table == FIRST_EPOCH else "") + arm_label(strategy, k) + suffix
    return Program(label, setup, runs, table=table, start_from="source mlp" if setup.pretrained else None,
                   tuned=("lr", "head_lr"), tuned_at="last")


