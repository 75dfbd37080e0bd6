"""What shapes a training program: its `Setup` (static; changing it
recompiles), the weight `Tracking` it records, and the names it accepts
(losses, optimizers, regularizers, scores, the per-run traced values).

Per-run values (seeds, the index of the initialization scheme, the rates,
the regularizer's strength) are not here: they are traced arrays with a
leading `runs` axis (see `RUN_VALUES` and `study.grid.train_grid`), so all
seeds and value-conditions of a grid share one program.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import optax

from study import data as data_lib
from study import inits
from study.models import select_activation

LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}
# Per-run traced values and their dtypes; a grid supplies all but those in
# `OPTIONAL` (0 when missing). `similarity` and `n_target` (examples per class
# trained on) shape a `Mixture` target task.
RUN_VALUES = {"seed": np.int32, "data_seed": np.int32, "init": np.int32, "activation": np.int32,
              "lr": np.float32, "head_lr": np.float32, "strength": np.float32, "similarity": np.float32,
              "n_target": np.int32}
OPTIONAL = ("head_lr", "strength", "similarity", "n_target")
# The regularizer is static (one program per kind); its strength is the
# traced `strength`: the penalty's weight (l1, l2), the proximal L1 weight
# (l1_prox), the hidden dropout rate (dropout) or the bound on each unit's
# incoming-weight norm (maxnorm, and dropout_maxnorm: the dropout paper's
# use of max-norm, with dropout at the setup's fixed rates).
REGULARIZERS = ("none", "l1", "l1_prox", "l2", "dropout", "maxnorm", "dropout_maxnorm")
DROPOUT, MAX_NORM = ("dropout", "dropout_maxnorm"), ("maxnorm", "dropout_maxnorm")  # the kinds that do each
# What a setup may ask to score beyond the per-epoch loss and test split:
# every `eval_every` epochs the accuracy on the large sample, on the
# validation sample and on the training set (not for a `Mixture`, which
# trains on a traced prefix of it) and the distinct units of each hidden
# layer; once per run the norm of each weight matrix's gradient at the
# initial weights (whole training set). Scoring `val_acc` also records the
# scored epoch with the best validation accuracy (`best_epoch`, the first
# on ties) and, with `eval_acc`, the large-sample accuracy of the weights
# of that epoch (`best_eval_acc`): early stopping, decided on validation.
# `probe_acc`, for a head on frozen features: the large-sample accuracy of a
# converged linear probe on those features (see `study.measures.linear_probe`).
SCORES = ("eval_acc", "val_acc", "train_acc", "distinct_units", "initial_grad_norm", "probe_acc")
# The per-layer measures a `Tracking` may keep (see `study.measures.weight_measures`;
# `reset_acc`: the accuracy after training with that layer reset to its start).
LAYER_MEASURES = ("w_norm", "mean_abs_w", "small_frac", "zero_frac", "rel_small_frac", "max_unit_norm",
                  "step_change", "rel_change", "dist_init", "dist_final", "tracked_abs_change",
                  "tracked_l2_change", "cka_final", "reset_acc")
# Independent key streams derived from a run's seeds with `fold_in`. Keys
# depend on the seeds only, never on a run's position in the grid, so a run
# gives the same numbers alone or in any grid, and runs of different
# conditions with the same seed share their data (a paired comparison).
DATA_STREAM, INIT_STREAM, SHUFFLE_STREAM, DROPOUT_STREAM = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Tracking:
    """What a run records about its weight matrices, inside the program.

    Per epoch and weight matrix: norms, sparsity, movement and the change of
    a fixed sample of weights; every `every` epochs the sampled weights'
    values (and at epoch 0); at the epochs `probe_at` (default: every
    `every` epochs) the linear CKA of the layer's output on a probe batch to
    its output at the end (NaN between: the probe's forward pass and Gram
    matrices cost as much as a short epoch's training); after training, the
    accuracy with the layer reset to its initial weights. Only the named
    `measures` are kept (and computed), every `measures_every` epochs. The
    strides and the names bound file sizes and time.
    """

    weights: int = 50  # sampled entries per matrix, the same for every run of a program
    from_end: bool = False  # the last entries of each flattened matrix (the original code), not a random sample
    every: int = 1
    measures_every: int = 1  # must divide the epochs, so the last epoch is kept
    measures: tuple[str, ...] = LAYER_MEASURES  # the per-layer measures an analysis reads
    values_of_seeds: int = 1  # the sampled weights' values are kept for seeds below this (figures draw one run)
    probe: int = 256  # the first points of the large sample
    probe_at: tuple[int, ...] | None = None  # epochs, counted from 1

    def probe_epochs(self, epochs: int) -> np.ndarray:
        """Indices into the per-epoch history of the epochs probed for CKA
        (the last one when a run is shorter than `every`)."""
        return np.asarray(self.probe_at or range(self.every, epochs + 1, self.every) or [epochs]) - 1


@dataclasses.dataclass(frozen=True)
class Start:
    """What starting a run reads (`loop.start_run`: its data and initial
    weights), `Setup.start`: programs whose setups differ only in how they
    train share one compiled start."""

    task: data_lib.TwoGaussians | data_lib.Mixture
    hidden: tuple[int, ...]
    n_out: int
    activations: tuple[str, ...]
    schemes: tuple[str, ...]
    init_biases: bool
    pretrained: bool


@dataclasses.dataclass(frozen=True)
class Setup:
    """The static part of a training program.

    Scoring: the loss on the training steps and the test split's accuracy
    are recorded every epoch; `scored` (of `SCORES`) adds the
    rest. The scores taken during training (`eval_acc`, `val_acc`,
    `train_acc`, `distinct_units`) are strided: taken every `eval_every` =
    `epochs / evals` epochs and NaN between. `eval_every` is also the step
    of early stopping (`best_epoch` is a scored epoch) and what `head_first`
    must be a multiple of, so it stays meaningful with nothing strided
    scored. `final_eval` takes `eval_acc` and `distinct_units` off the
    stride: they are then scored once, after the last epoch, while the other
    strided scores (validation included) keep the stride.
    """

    task: data_lib.TwoGaussians | data_lib.Mixture = data_lib.TwoGaussians()
    hidden: tuple[int, ...] = (100, 100)
    activations: tuple[str, ...] = ("relu",)  # the choices of the traced `activation`
    n_out: int = 2
    loss: str = "cross_entropy"  # or "mse" on one-hot targets, as the original code
    optimizer: str = "adam"
    decay: float = 0.0  # every rate decays to 0 along a cosine over this last share of each phase (0: constant)
    schemes: tuple[str, ...] = ("glorot_uniform",)  # the choices of the traced `init`
    init_biases: bool = False  # biases drawn like the weights (original code)
    epochs: int = 100
    batch_size: int | None = 64  # None: full batch
    evals: int = 5  # strided scorings per run, one every eval_every = epochs / evals epochs (see above)
    final_eval: bool = False  # eval_acc and distinct units after the last epoch only (validation stays strided)
    steps_per_epoch: int | None = None  # minibatches per epoch, from one reshuffle (default: all that fit)
    scored: tuple[str, ...] = ("eval_acc",)  # of SCORES
    regularizer: str = "none"  # one of REGULARIZERS
    penalty_mean: bool = False  # l1/l2 on each matrix's mean (the original code), not the sum over weights
    input_dropout: float = 0.2  # input rate when the regularizer drops out (DROPOUT)
    hidden_dropout: float = 0.5  # hidden rate of dropout_maxnorm, whose strength is the bound
    tracking: Tracking | None = None
    # Transfer: the hidden layers start from weights pretrained by an earlier
    # program (a new head on top); only the top `trainable` layers train
    # (None: all). With `own_head_lr` the output layer trains at the run's
    # traced `head_lr`, the other layers at its `lr`; with `head_first` the
    # head first trains alone for that many epochs, then the top `trainable`
    # layers, head included, at `lr` (the staged recipe). The final weights
    # come back with `keep_params`.
    pretrained: bool = False
    trainable: int | None = None
    standardize_features: bool = False  # a head alone sees its frozen features standardized (see `loop.frozen_view`)
    own_head_lr: bool = False
    head_first: int = 0
    keep_params: bool = False

    def __post_init__(self):
        inits.check_schemes(self.schemes)
        select_activation(self.activations, 0)
        choices = [("loss", self.loss, LOSSES), ("optimizer", self.optimizer, OPTIMIZERS),
                   ("regularizer", self.regularizer, REGULARIZERS)]
        choices += [("scored metric", name, SCORES) for name in self.scored]
        choices += [("layer measure", name, LAYER_MEASURES) for name in getattr(self.tracking, "measures", ())]
        for field, value, allowed in choices:
            if value not in allowed:
                raise ValueError(f"unknown {field} {value!r}; choose from {', '.join(allowed)}")
        if self.epochs < 1 or self.evals < 1 or self.epochs % self.evals:
            raise ValueError(f"epochs ({self.epochs}) must be a positive multiple of evals ({self.evals})")
        if self.tracking and self.epochs % self.tracking.measures_every:
            raise ValueError(f"epochs ({self.epochs}) must be a multiple of measures_every "
                             f"({self.tracking.measures_every})")
        if self.tracking and not all(1 <= e <= self.epochs for e in self.tracking.probe_at or ()):
            raise ValueError(f"probe_at must be epochs 1..{self.epochs}, got {self.tracking.probe_at}")
        layers = len(self.hidden) + 1
        if self.trainable is not None and not 1 <= self.trainable <= layers:
            raise ValueError(f"trainable must be 1..{layers} top layers, got {self.trainable}")
        if not 0 <= self.head_first < self.epochs or self.head_first % self.eval_every:
            raise ValueError(f"head_first ({self.head_first}) must be a multiple of {self.eval_every} "
                             f"below the epochs ({self.epochs})")
        for name, wanted in [("probe_acc", "probe_acc" in self.scored), ("standardize_features",
                                                                         self.standardize_features)]:
            if wanted and (self.trainable != 1 or self.regularizer in DROPOUT or self.head_first):
                raise ValueError(f"{name} is for a head alone on frozen features: set trainable=1, "
                                 "without dropout or head_first")
        if not 0 <= self.decay <= 1:
            raise ValueError(f"decay is the share of each phase the rate decays over: 0..1, got {self.decay}")
        if self.decay and self.regularizer == "l1_prox":
            raise ValueError("proximal L1 thresholds by the constant rate: it takes no decay")
        if self.head_first and not self.own_head_lr:
            raise ValueError("head_first needs the head's own rate (own_head_lr)")
        if isinstance(self.task, data_lib.Mixture):
            if not (self.steps_per_epoch and self.batch_size):
                raise ValueError("a Mixture task trains a fixed number of minibatches per epoch: "
                                 "set batch_size and steps_per_epoch")
            if {"train_acc", "initial_grad_norm"} & set(self.scored):
                raise ValueError("a Mixture task trains on a traced prefix of its training set: "
                                 "train_acc and initial_grad_norm are not scored")
        elif self.batches_per_epoch * (self.batch_size or self.task.n_train) > self.task.n_train:
            raise ValueError(f"{self.batches_per_epoch} minibatches of {self.batch_size} exceed "
                             f"the {self.task.n_train} training points")

    @property
    def start(self) -> Start:
        """The part of this setup that starting a run reads."""
        return Start(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Start)})

    @property
    def batches_per_epoch(self) -> int:
        """Minibatches per epoch; the remainder of a reshuffled epoch is dropped."""
        if self.batch_size is None:
            return 1
        return self.steps_per_epoch or self.task.n_train // self.batch_size

    @property
    def eval_every(self) -> int:
        """Epochs between strided scorings (see the class docstring)."""
        return self.epochs // self.evals


def stride(n: int, at_most: int) -> int:
    """The largest divisor of `n` not above `at_most`: a recording stride
    that always keeps the last epoch."""
    return max(d for d in range(1, max(1, at_most) + 1) if n % d == 0)


def log_epochs(epochs: int, at_most: int) -> tuple[int, ...]:
    """Up to `at_most` epochs from 1 to `epochs`, evenly spaced on a log scale:
    every epoch early, where convergence epochs are small and ties costly,
    sparser later, and always the last."""
    return tuple(np.unique(np.round(np.geomspace(1, epochs, at_most)).astype(int)).tolist())
