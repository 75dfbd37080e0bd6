"""Whole trainings as one compiled program per grid.

A `Setup` holds everything that shapes the program (sizes, activation, loss,
epochs); it is static, and changing it recompiles. Per-run values (seeds,
the index of the initialization scheme, the learning rate) are traced arrays
with a leading `runs` axis, so all seeds and value-conditions of a grid share
one program. The program is `jit(shard_map(...))` over a 1-D mesh named
`runs` that spans every device; each device starts its runs one at a time
(`start_run` under `lax.map`) and trains them `batch_runs` at a time
(`train_from` under `vmap`), every training a `lax.scan` over epochs. Metrics come back as arrays; weights never
leave the device during training.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from study import data as data_lib
from study import devices as devices_lib
from study import inits
from study.models import MLP, layer_table, select_activation

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
# incoming-weight norm (maxnorm).
REGULARIZERS = ("none", "l1", "l1_prox", "l2", "dropout", "maxnorm")
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
# converged linear probe on those features (see `probe_accuracy`).
SCORES = ("eval_acc", "val_acc", "train_acc", "distinct_units", "initial_grad_norm", "probe_acc")
PROBE_STEPS = 100  # L-BFGS iterations of the linear probe
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
    accuracy with the layer reset to its initial weights. The per-layer
    measures are kept every `measures_every` epochs. The strides bound file
    sizes and time.
    """

    weights: int = 50  # sampled entries per matrix, the same for every run of a program
    from_end: bool = False  # the last entries of each flattened matrix (the original code), not a random sample
    every: int = 1
    measures_every: int = 1  # must divide the epochs, so the last epoch is kept
    probe: int = 256  # the first points of the large sample
    probe_at: tuple[int, ...] | None = None  # epochs, counted from 1

    def probe_epochs(self, epochs: int) -> np.ndarray:
        """Indices into the per-epoch history of the epochs probed for CKA
        (the last one when a run is shorter than `every`)."""
        return np.asarray(self.probe_at or range(self.every, epochs + 1, self.every) or [epochs]) - 1


@dataclasses.dataclass(frozen=True)
class Setup:
    """The static part of a training program."""

    task: data_lib.TwoGaussians | data_lib.Mixture = data_lib.TwoGaussians()
    hidden: tuple[int, ...] = (100, 100)
    activations: tuple[str, ...] = ("relu",)  # the choices of the traced `activation`
    n_out: int = 2
    loss: str = "cross_entropy"  # or "mse" on one-hot targets, as the original code
    optimizer: str = "adam"
    decay: bool = False  # every rate decays to 0 over each phase along a cosine (else constant)
    schemes: tuple[str, ...] = ("glorot_uniform",)  # the choices of the traced `init`
    init_biases: bool = False  # biases drawn like the weights (original code)
    epochs: int = 100
    batch_size: int | None = 64  # None: full batch
    evals: int = 5  # large-sample scores per run, every epochs / evals epochs
    final_eval: bool = False  # the large sample scored after the last epoch only (validation tracks training)
    steps_per_epoch: int | None = None  # minibatches per epoch, from one reshuffle (default: all that fit)
    scored: tuple[str, ...] = ("eval_acc",)  # of SCORES
    regularizer: str = "none"  # one of REGULARIZERS
    penalty_mean: bool = False  # l1/l2 on each matrix's mean (the original code), not the sum over weights
    input_dropout: float = 0.2  # input rate when the regularizer is dropout
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
    standardize_features: bool = False  # a head alone sees its frozen features standardized (see `frozen_view`)
    own_head_lr: bool = False
    head_first: int = 0
    keep_params: bool = False

    def __post_init__(self):
        inits.check_schemes(self.schemes)
        select_activation(self.activations, 0)
        choices = [("loss", self.loss, LOSSES), ("optimizer", self.optimizer, OPTIMIZERS),
                   ("regularizer", self.regularizer, REGULARIZERS)]
        for field, value, allowed in choices + [("scored metric", name, SCORES) for name in self.scored]:
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
            if wanted and (self.trainable != 1 or self.regularizer == "dropout" or self.head_first):
                raise ValueError(f"{name} is for a head alone on frozen features: set trainable=1, "
                                 "without dropout or head_first")
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
    def batches_per_epoch(self) -> int:
        """Minibatches per epoch; the remainder of a reshuffled epoch is dropped."""
        if self.batch_size is None:
            return 1
        return self.steps_per_epoch or self.task.n_train // self.batch_size

    @property
    def eval_every(self) -> int:
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


def build_model(setup: Setup, values: dict, key) -> MLP:
    """The run's model; `values["init"]` and `values["activation"]` may be traced."""
    kernel_init = inits.select(setup.schemes, values["init"])
    bias_init = inits.like_weights(kernel_init) if setup.init_biases else nnx.initializers.zeros
    return MLP(setup.task.dim, setup.hidden, setup.n_out,
               activation=select_activation(setup.activations, values["activation"]),
               kernel_init=kernel_init, bias_init=bias_init, rngs=nnx.Rngs(key))


def model_table(setup: Setup) -> list[dict]:
    """The layer table of the setup's model, from shapes only (nothing is computed)."""
    first = {"init": 0, "activation": 0}
    return layer_table(nnx.eval_shape(lambda: build_model(setup, first, jax.random.key(0))))


def loss_fn(setup: Setup, logits: jax.Array, y: jax.Array) -> jax.Array:
    if setup.loss == "mse":
        return jnp.mean((logits - jax.nn.one_hot(y, setup.n_out)) ** 2)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_step(loss, tx: optax.GradientTransformation, has_aux: bool = False):
    """One training step as S-step describes it: forward pass and loss,
    gradient of the loss with respect to the parameters, update against it.

    `loss(params, *batch) -> scalar` (or `(scalar, aux)` with `has_aux`);
    returns `step(params, opt_state, *batch) -> (params, opt_state, loss)`,
    the loss (and aux) of the step's forward pass, before the update.
    """

    def step(params, opt_state, *batch):
        value, grads = jax.value_and_grad(loss, has_aux=has_aux)(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def kernels(params) -> list[jax.Array]:
    """The weight matrices, input layer first."""
    return [layer["kernel"][...] for layer in params["layers"].values()]


def on_kernels(params):
    """A mask pytree: True on weight matrices, False on biases."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[2].key == "kernel", params)


def projection(project) -> optax.GradientTransformation:
    """Maps each parameter to `project(param + update)`: a proximal or
    projection step after the optimizer's own update."""

    def update(updates, state, params):
        return jax.tree.map(lambda u, p: project(p + u) - p, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def optimizer(setup: Setup, values: dict, params, steps: int = 1) -> optax.GradientTransformation:
    """The run's optimizer over `steps` steps (the decay's length); proximal
    L1 (soft thresholding by lr * strength) and max-norm act on the weight
    matrices after each update."""
    rate = optax.cosine_decay_schedule(values["lr"], steps) if setup.decay else values["lr"]
    tx = OPTIMIZERS[setup.optimizer](rate)
    bound = values["strength"]
    if setup.regularizer == "l1_prox":
        threshold = values["lr"] * bound
        project = lambda w: jnp.sign(w) * jnp.maximum(jnp.abs(w) - threshold, 0.0)  # noqa: E731
    elif setup.regularizer == "maxnorm":  # each unit's incoming weights are a column
        project = lambda w: w * jnp.minimum(1.0, bound / jnp.linalg.norm(w, axis=0))  # noqa: E731
    else:
        return tx
    return optax.chain(tx, optax.masked(projection(project), on_kernels(params)))


def penalty(setup: Setup, params, strength: jax.Array) -> jax.Array:
    """The l1 or l2 penalty on the weight matrices (0 for other regularizers)."""
    if setup.regularizer not in ("l1", "l2"):
        return jnp.float32(0)
    power = 1 if setup.regularizer == "l1" else 2
    reduce = jnp.mean if setup.penalty_mean else jnp.sum
    return strength * sum(reduce(jnp.abs(w) ** power) for w in kernels(params))


def dropout(key: jax.Array, input_rate, hidden_rate):
    """`drop(x, i)` for `MLP`: inverted dropout on layer i's input (rates may be traced)."""

    def drop(x, i):
        rate = input_rate if i == 0 else hidden_rate
        keep = jax.random.bernoulli(jax.random.fold_in(key, i), 1 - rate, x.shape)
        return jnp.where(keep, x / (1 - rate), 0.0)

    return drop


def distinct_units(kernel: jax.Array, bias: jax.Array, rtol: float = 1e-3) -> jax.Array:
    """How many units of a layer compute different functions.

    Two units count as one when their incoming weights and bias differ by at
    most `rtol` times the layer's largest entry. A layer whose symmetry was
    never broken has 1; rounding can split identical units by a few ulps,
    which `rtol` ignores.
    """
    units = jnp.concatenate([kernel, bias[None]], axis=0).T  # (units, fan_in + 1)
    gap = jnp.max(jnp.abs(units[:, None] - units[None]), axis=-1)  # (units, units)
    earlier = jnp.tril(jnp.ones(gap.shape, bool), k=-1)
    repeats = jnp.any(earlier & (gap <= rtol * jnp.max(jnp.abs(units))), axis=1)
    return jnp.sum(~repeats).astype(jnp.float32)


def linear_cka(x: jax.Array, y: jax.Array) -> jax.Array:
    """Linear CKA (Kornblith et al., 2019) of two representations (n, p) and
    (n, q) of the same n points: 1 for representations equal up to an
    orthogonal transform and isotropic scaling."""
    x, y = x - x.mean(0), y - y.mean(0)
    return jnp.sum((x.T @ y) ** 2) / (jnp.linalg.norm(x.T @ x) * jnp.linalg.norm(y.T @ y))


RELATIVE_SMALL = 0.05  # `rel_small_frac`: the share of weights under this fraction of their matrix's mean |w|


def tracked_indices(setup: Setup) -> list[np.ndarray]:
    """The sampled entries of each flattened weight matrix: fixed per program."""
    sizes = [a * b for a, b in zip((setup.task.dim, *setup.hidden), (*setup.hidden, setup.n_out))]
    n = setup.tracking.weights
    if setup.tracking.from_end:
        return [np.arange(size - min(n, size), size) for size in sizes]
    rng = np.random.default_rng(0)
    return [np.sort(rng.choice(size, min(n, size), replace=False)) for size in sizes]


def weight_measures(setup: Setup, initial: list, stacked: list, final_outputs: list,
                    outputs: list) -> tuple[dict, jax.Array]:
    """Per-layer measures per kept epoch, (epochs, layers) each, from the kernels
    after every epoch and the probe outputs at the probed epochs (sparsity by
    an absolute cutoff and scale-free, `rel_small_frac`; the largest norm of a
    unit's incoming weights, which a max-norm bound caps);
    and the sampled weights' values, (records, layers, weights), at epochs 0,
    every, 2 * every, ..."""
    measures, sampled = {}, []
    every, probed = setup.tracking.every, setup.tracking.probe_epochs(setup.epochs)
    for w0, w, idx, out, out_final in zip(initial, stacked, tracked_indices(setup), outputs, final_outputs):
        path = jnp.concatenate([w0.reshape(1, -1), w.reshape(len(w), -1)])  # epoch 0, 1, ..., epochs
        flat, steps = path[1:], jnp.diff(path, axis=0)
        norm = jnp.linalg.norm(flat, axis=1)
        step_norm = jnp.linalg.norm(steps, axis=1)
        tracked = jnp.diff(path[:, idx], axis=0)
        row = {"w_norm": norm, "mean_abs_w": jnp.mean(jnp.abs(flat), axis=1),
               "small_frac": jnp.mean(jnp.abs(flat) < 1e-3, axis=1),
               "zero_frac": jnp.mean(flat == 0, axis=1),
               "rel_small_frac": jnp.mean(jnp.abs(flat) < RELATIVE_SMALL * jnp.mean(jnp.abs(flat), 1, keepdims=True),
                                          axis=1),
               "max_unit_norm": jnp.max(jnp.linalg.norm(w, axis=1), axis=-1),
               "step_change": step_norm, "rel_change": step_norm / norm,
               "dist_init": jnp.linalg.norm(flat - path[0], axis=1),
               "dist_final": jnp.linalg.norm(flat - path[-1], axis=1),
               "tracked_abs_change": jnp.mean(jnp.abs(tracked), axis=1),
               "tracked_l2_change": jnp.linalg.norm(tracked, axis=1),
               "cka_final": jnp.full(len(flat), jnp.nan).at[probed].set(
                   jax.vmap(linear_cka, (0, None))(out, out_final))}
        for k, v in row.items():
            measures.setdefault(k, []).append(v)
        sampled.append(path[::every, idx])
    kept = slice(setup.tracking.measures_every - 1, None, setup.tracking.measures_every)
    return {k: jnp.stack(v, axis=1)[kept] for k, v in measures.items()}, jnp.stack(sampled, axis=1)


def layer_labels(params, trainable: int | None, head: bool = False):
    """"trained" or "frozen" per parameter: the top `trainable` layers train
    (None: all); with `head`, the output layer is labelled "head"."""
    layers = len(params["layers"])
    first = 0 if trainable is None else layers - trainable

    def label(path, _):
        i = path[1].key
        return "head" if head and i == layers - 1 else "trained" if i >= first else "frozen"

    return jax.tree_util.tree_map_with_path(label, params)


def flat_params(params) -> tuple[jax.Array, ...]:
    """(kernel, bias) of every layer, input layer first: how weights leave and enter a program."""
    return tuple(layer[name][...] for layer in params["layers"].values() for name in ("kernel", "bias"))


def load_body(params, pretrained: tuple[jax.Array, ...], index: jax.Array):
    """The hidden layers' parameters replaced by row `index` of `pretrained`
    (`flat_params` of the pretrained networks, stacked); the head is kept."""
    head = len(params["layers"]) - 1

    def load(path, p):
        i = path[1].key
        return p if i == head else pretrained[2 * i + (path[2].key == "bias")][index]

    return jax.tree_util.tree_map_with_path(load, params)


def frozen_step(setup: Setup, values: dict, params, loss, trainable: int | None, head_lr=None,
                has_aux: bool = False, steps: int = 1):
    """The step and optimizer that train only the top `trainable` layers
    (None: all) of `params`, the output layer at `head_lr` if given;
    `loss(params, *batch)` as for `make_step`. `optax.partition` hands each
    optimizer only its own leaves, so frozen ones get no optimizer state and
    a zero update; their gradients, never used, are left out of the compiled
    step, with the backward pass below the lowest trained layer."""
    tx = optimizer(setup, values, params, steps)
    if trainable is None and head_lr is None:
        return make_step(loss, tx, has_aux), tx
    labels = layer_labels(params, trainable, head=head_lr is not None)
    transforms = {"trained": tx, "frozen": optax.set_to_zero()}
    if head_lr is not None:
        transforms["head"] = optimizer(setup, {**values, "lr": head_lr}, params, steps)
    tx = optax.partition(transforms, labels)
    return make_step(loss, tx, has_aux), tx


class Run(NamedTuple):
    """What stays fixed during one run: its traced values, its data, its
    initial parameters and its key streams."""

    values: dict
    data: dict
    initial: nnx.State
    shuffle_key: jax.Array
    dropout_key: jax.Array


class Phase(NamedTuple):
    """Epochs `first` to `first + epochs - 1`, training the top `trainable`
    layers (None: all) at `lr`, a new head at `head_lr` (None: at `lr`)."""

    first: int
    epochs: int
    trainable: int | None
    lr: jax.Array
    head_lr: jax.Array | None


class View(NamedTuple):
    """A run's data as a phase sees it: the inputs, or the outputs of its
    frozen layers below `start`, computed once (see `frozen_view`)."""

    data: dict
    start: int = 0


INPUTS = ("x_train", "x_test", "x_eval", "x_val")


def start_run(setup: Setup, values: dict, pretrained: tuple = ()) -> Run:
    """Draw the run's data and initial parameters, loading a pretrained body.

    Runs start one at a time even when they train `batch_runs` at a time:
    batched LAPACK calls (the QR of orthogonal initialization and of a
    `Mixture`'s geometry) can deadlock XLA's CPU thread pool."""
    seed_key = jax.random.key(values["seed"])
    data_key = jax.random.fold_in(jax.random.key(values["data_seed"]), DATA_STREAM)
    data = data_lib.sample(setup.task, data_key, values["similarity"])
    model = build_model(setup, values, jax.random.fold_in(seed_key, INIT_STREAM))
    params = nnx.state(model)
    if setup.pretrained:
        params = load_body(params, pretrained, values["seed"])
    return Run(values, data, params, jax.random.fold_in(seed_key, SHUFFLE_STREAM),
               jax.random.fold_in(seed_key, DROPOUT_STREAM))


def outputs(setup: Setup, run: Run, params, x: jax.Array, start: int = 0, drop=None) -> list[jax.Array]:
    """Every layer's output from layer `start` on (see `MLP.outputs`)."""
    graph = nnx.graphdef(nnx.eval_shape(lambda: build_model(setup, run.values, jax.random.key(0))))
    return nnx.merge(graph, params).outputs(x, drop, start)


def scores(setup: Setup, run: Run, params, x: jax.Array, y: jax.Array, start: int = 0):
    """(loss, accuracy) of the network on (x, y), without regularization."""
    logits = outputs(setup, run, params, x, start)[-1]
    return loss_fn(setup, logits, y), jnp.mean(jnp.argmax(logits, -1) == y)


def objective(setup: Setup, run: Run, start: int):
    """`loss(params, x, y, key) -> (loss + penalty, loss)`: what a step
    minimizes, and the data loss it reports as `train_loss`."""

    def loss(params, x, y, key):
        drop = None
        if setup.regularizer == "dropout":
            drop = dropout(key, setup.input_dropout, run.values["strength"])
        value = loss_fn(setup, outputs(setup, run, params, x, start, drop)[-1], y)
        return value + penalty(setup, params, run.values["strength"]), value

    return loss


def frozen_view(setup: Setup, run: Run, params, trainable: int | None) -> View:
    """The layers below the trained ones never change in a phase; without
    dropout they map each input to the same features all phase long, so they
    are applied once and the phase trains on their outputs (feature
    extraction then costs a linear model's steps). With
    `standardize_features` the features are standardized over the training
    points the run uses: the head is still a linear classifier on them, but
    Adam's minibatch steps reach a converged probe's accuracy, which on raw
    ReLU features of very different scales they did not in the budget."""
    start = 0 if trainable is None else len(setup.hidden) + 1 - trainable
    if not start or setup.regularizer == "dropout":
        return View(run.data)
    features = {k: outputs(setup, run, params, run.data[k])[start - 1] for k in INPUTS}
    if setup.standardize_features:
        mean, std = moments(features["x_train"], used_points(setup, run))
        features = {k: (v - mean) / std for k, v in features.items()}
    return View({**run.data, **features}, start)


def used_points(setup: Setup, run: Run) -> jax.Array:
    """Which training points the run uses: a `Mixture` run's traced prefix, else all."""
    n = len(run.data["y_train"])
    if isinstance(setup.task, data_lib.Mixture):
        return jnp.arange(n) < run.values["n_target"] * setup.task.classes
    return jnp.ones(n, bool)


def moments(x: jax.Array, used: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-feature mean and standard deviation (+1e-6) over the `used` rows of x."""
    weights = used[:, None] / jnp.sum(used)
    mean = jnp.sum(weights * x, 0)
    return mean, jnp.sqrt(jnp.sum(weights * (x - mean) ** 2, 0)) + 1e-6


def batch_indices(setup: Setup, run: Run, epoch: jax.Array) -> jax.Array | None:
    """This epoch's minibatches as indices, (batches, batch_size): a fresh
    permutation of the training set, or for a `Mixture` points drawn with
    replacement from its traced prefix (a permutation of a traced prefix
    needs a sort per epoch, which cost more than the training of a small
    head); None when every step takes the whole training set."""
    if setup.batch_size is None:
        return None
    key = jax.random.fold_in(run.shuffle_key, epoch)
    n, batch = setup.batches_per_epoch, setup.batch_size
    if not isinstance(setup.task, data_lib.Mixture):
        return jax.random.permutation(key, setup.task.n_train)[: n * batch].reshape(n, batch)
    return jax.random.randint(key, (n, batch), 0, run.values["n_target"] * setup.task.classes)


def train_epoch(setup: Setup, run: Run, view: View, step, carry, epoch: jax.Array):
    """One epoch of steps; its per-epoch metrics (and the parameters, when
    tracking). `train_loss` is the mean data loss of the epoch's steps, each
    from the step's own forward pass, as Keras reports it."""
    x, y = view.data["x_train"], view.data["y_train"]
    idx = batch_indices(setup, run, epoch)
    key = jax.random.fold_in(run.dropout_key, epoch)
    if idx is None:
        params, opt_state, (_, loss) = step(*carry, x, y, key)
        losses = loss[None]
    else:
        def minibatch(carry, inputs):
            i, idx = inputs
            params, opt_state, (_, loss) = step(*carry, x[idx], y[idx], jax.random.fold_in(key, i))
            return (params, opt_state), loss

        (params, opt_state), losses = jax.lax.scan(minibatch, carry, (jnp.arange(len(idx)), idx))
    metrics = {"train_loss": jnp.mean(losses)}
    metrics["test_loss"], metrics["test_acc"] = scores(setup, run, params, view.data["x_test"], run.data["y_test"],
                                                       view.start)
    metrics["diverged"] = ~jnp.isfinite(metrics["train_loss"])
    if setup.tracking:
        metrics["params"] = params
    return (params, opt_state), metrics


def strided_metrics(setup: Setup, run: Run, view: View, params) -> dict:
    """The strided metrics of `setup.scored`, every `eval_every` epochs."""
    out = {}
    for name in ("eval", "val"):
        if f"{name}_acc" in setup.scored and not (name == "eval" and setup.final_eval):
            out[f"{name}_acc"] = scores(setup, run, params, view.data[f"x_{name}"], run.data[f"y_{name}"],
                                        view.start)[1]
    if "train_acc" in setup.scored:
        out["train_acc"] = scores(setup, run, params, view.data["x_train"], run.data["y_train"], view.start)[1]
    if "distinct_units" in setup.scored:
        for i in range(len(setup.hidden)):
            layer = params["layers"][i]
            out[f"distinct_h{i + 1}"] = distinct_units(layer["kernel"][...], layer["bias"][...])
    return out


class Best(NamedTuple):
    """The scored epoch with the best validation accuracy so far and its weights."""

    val_acc: jax.Array
    epoch: jax.Array
    params: nnx.State


def keep_best(best: Best, strided: dict, epoch: jax.Array, params) -> Best:
    """`best`, or this scored epoch's weights where they validate strictly better."""
    if "val_acc" not in strided:
        return best
    return jax.tree.map(lambda new, old: jnp.where(strided["val_acc"] > best.val_acc, new, old),
                        Best(strided["val_acc"], epoch, params), best)


def train_phase(setup: Setup, run: Run, params, best: Best, phase: Phase):
    """Train one phase: its view of the data, the final parameters, the
    best-validated ones so far, per-epoch metrics (epochs,) and the strided
    ones (epochs / eval_every,)."""
    view = frozen_view(setup, run, params, phase.trainable)
    loss = objective(setup, run, view.start)
    step, tx = frozen_step(setup, {**run.values, "lr": phase.lr}, params, loss, phase.trainable, phase.head_lr,
                           has_aux=True, steps=phase.epochs * setup.batches_per_epoch)
    epoch = functools.partial(train_epoch, setup, run, view, step)

    def block(carry, start):
        (params, opt_state), best = carry
        (params, opt_state), metrics = jax.lax.scan(epoch, (params, opt_state), start + jnp.arange(setup.eval_every))
        strided = strided_metrics(setup, run, view, params)
        best = keep_best(best, strided, start + setup.eval_every, params)
        return ((params, opt_state), best), (metrics, strided)

    starts = jnp.arange(phase.first, phase.first + phase.epochs, setup.eval_every)
    ((params, _), best), (metrics, strided) = jax.lax.scan(block, ((params, tx.init(params)), best), starts)
    return view, params, best, jax.tree.map(lambda v: v.reshape(phase.epochs, *v.shape[2:]), metrics), strided


def phases(setup: Setup, values: dict) -> list[Phase]:
    """The head alone first when `head_first`, then the top `trainable` layers."""
    head_lr = values["head_lr"] if setup.own_head_lr else None
    head_first = [Phase(0, setup.head_first, 1, head_lr, None)] if setup.head_first else []
    return head_first + [Phase(setup.head_first, setup.epochs - setup.head_first, setup.trainable, values["lr"],
                               None if setup.head_first else head_lr)]


def train_run(setup: Setup, values: dict[str, jax.Array],
              pretrained: tuple[jax.Array, ...] = ()) -> dict[str, dict | jax.Array]:
    """Train one run; `values` holds its traced scalars (see `RUN_VALUES`).

    Returns `{"epochs": ...}`: per-epoch metrics of shape (epochs,)
    (strided ones NaN off the stride) and per-run scalars of shape (); with
    tracking also `"layers"` and `"weights"` (see `track`); with
    `keep_params` also `"params"`, the final `flat_params`. With
    `setup.pretrained` the hidden layers start from `pretrained`'s row
    `values["seed"]`.
    """
    return train_from(setup, start_run(setup, values, pretrained))


def train_from(setup: Setup, run: Run) -> dict[str, dict | jax.Array]:
    """`train_run` from a started run."""
    params, parts = run.initial, []
    best = Best(jnp.float32(-jnp.inf), jnp.int32(0), params)
    for phase in phases(setup, run.values):
        view, params, best, metrics, strided = train_phase(setup, run, params, best, phase)
        parts.append((metrics, strided))
    metrics, strided = jax.tree.map(lambda *p: jnp.concatenate(p), *parts)
    for k, v in strided.items():  # NaN between the scored epochs
        metrics[k] = jnp.full(setup.epochs, jnp.nan).at[setup.eval_every - 1::setup.eval_every].set(v)
    # The last phase's frozen layers are frozen in every earlier phase too,
    # so its view scores the final and the best-validated weights alike.
    evaluate = functools.partial(scores, setup, run, x=view.data["x_eval"], y=run.data["y_eval"], start=view.start)
    if setup.final_eval and "eval_acc" in setup.scored:
        metrics["eval_acc"] = jnp.full(setup.epochs, jnp.nan).at[-1].set(evaluate(params=params)[1])
    metrics["bayes_acc"] = run.data["bayes_acc"]
    if "val_acc" in setup.scored:
        metrics["best_epoch"] = best.epoch
    if {"val_acc", "eval_acc"} <= set(setup.scored):
        metrics["best_eval_acc"] = evaluate(params=best.params)[1]
    if "initial_grad_norm" in setup.scored:
        metrics.update(initial_grad_norms(setup, run))
    if "probe_acc" in setup.scored:
        metrics["probe_acc"] = probe_accuracy(setup, run, frozen_view(setup, run, run.initial, 1))
    out = {"epochs": metrics}
    if setup.keep_params:
        out["params"] = flat_params(params)
    if setup.tracking:
        out.update(track(setup, run, params, metrics.pop("params")))
    return out


def initial_grad_norms(setup: Setup, run: Run) -> dict[str, jax.Array]:
    """`grad_norm_l<i>`: the norm of the data loss's gradient with respect to
    weight matrix i at the initial weights, on the whole training set: how
    much signal each layer gets at the start (none through symmetric or
    vanishing weights)."""
    x, y = run.data["x_train"], run.data["y_train"]
    grads = jax.grad(lambda p: loss_fn(setup, outputs(setup, run, p, x)[-1], y))(run.initial)
    return {f"grad_norm_l{i}": jnp.linalg.norm(w) for i, w in enumerate(kernels(grads))}


def probe_accuracy(setup: Setup, run: Run, view: View) -> jax.Array:
    """The large-sample accuracy of a converged linear probe on the frozen
    features of `view`: multinomial logistic regression on the features
    standardized over the run's training prefix, with scikit-learn's default
    L2 penalty (C = 1), fitted full batch by L-BFGS (optax, zoom line
    search). The reference a trained head is held against."""
    x, y, used = view.data["x_train"], run.data["y_train"], used_points(setup, run)
    mean, std = moments(x, used)

    def logits(w, x):
        return (x - mean) / std @ w["kernel"] + w["bias"]

    def loss(w):
        ce = optax.softmax_cross_entropy_with_integer_labels(logits(w, x), y)
        return jnp.sum(jnp.where(used, ce, 0)) + 0.5 * jnp.sum(w["kernel"] ** 2)

    solver, value_and_grad = optax.lbfgs(), optax.value_and_grad_from_state(loss)

    def step(carry, _):
        w, state = carry
        value, grad = value_and_grad(w, state=state)
        updates, state = solver.update(grad, state, w, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(w, updates), state), None

    w = {"kernel": jnp.zeros((x.shape[1], setup.n_out)), "bias": jnp.zeros(setup.n_out)}
    (w, _), _ = jax.lax.scan(step, (w, solver.init(w)), length=PROBE_STEPS)
    return jnp.mean(jnp.argmax(logits(w, view.data["x_eval"]), -1) == run.data["y_eval"])


def track(setup: Setup, run: Run, final, history) -> dict:
    """Per-layer measures (epochs, layers) and, after training, the accuracy
    with each layer reset to its initial weights (Zhang et al., 2019),
    (layers,); the sampled weights (records, layers, weights)."""
    probe = run.data["x_eval"][:setup.tracking.probe]
    probed = jax.tree.map(lambda v: v[setup.tracking.probe_epochs(setup.epochs)], history)
    outs = jax.vmap(lambda p: outputs(setup, run, p, probe))(probed)
    layers, sampled = weight_measures(setup, kernels(run.initial), kernels(history), outputs(setup, run, final, probe), outs)

    def reset(i):
        mixed = jax.tree_util.tree_map_with_path(lambda path, p, p0: p0 if path[1].key == i else p,
                                                 final, run.initial)
        return scores(setup, run, mixed, run.data["x_eval"], run.data["y_eval"])[1]

    layers["reset_acc"] = jnp.stack([reset(i) for i in range(len(setup.hidden) + 1)])
    return {"layers": layers, "weights": sampled}


@dataclasses.dataclass(frozen=True)
class Timing:
    compile_s: float
    train_s: float
    batch_runs: int  # runs trained together on each device
    cache_hits: int = 0  # programs loaded from the persistent compilation cache


@functools.lru_cache(maxsize=32)
def _compiled(setup: Setup, devices: tuple, n_runs: int, batch_runs: int, pretrained: tuple):
    """The program for `n_runs` runs; `pretrained` holds the shapes of the
    pretrained arrays, which every device receives whole."""
    mesh = jax.sharding.Mesh(np.array(devices), ("runs",))

    def batch(values, weights):
        runs = jax.lax.map(lambda v: start_run(setup, v, weights), values)
        return jax.vmap(functools.partial(train_from, setup))(runs)

    def per_device(values, weights):
        batches = jax.tree.map(lambda v: v.reshape(-1, batch_runs), values)
        out = jax.lax.map(lambda v: batch(v, weights), batches)
        return jax.tree.map(lambda v: v.reshape(-1, *v.shape[2:]), out)

    program = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("runs"), P()), out_specs=P("runs"),
                                      check_vma=False))
    sharding, replicated = (jax.sharding.NamedSharding(mesh, spec) for spec in (P("runs"), P()))
    shapes = {k: jax.ShapeDtypeStruct((n_runs,), dt, sharding=sharding) for k, dt in RUN_VALUES.items()}
    weights = tuple(jax.ShapeDtypeStruct(shape, np.float32, sharding=replicated) for shape in pretrained)
    return program.lower(shapes, weights).compile(), sharding, replicated


def wait(tree, poll_s: float = 0.05):
    """`tree` once every array in it is computed. Python gets control back
    every `poll_s` meanwhile, so a Ctrl-C stops a long program within that
    time instead of after it (a blocking wait would hold the interrupt)."""
    leaves = jax.tree.leaves(tree)
    while not all(leaf.is_ready() for leaf in leaves):
        time.sleep(poll_s)
    return tree


CPU_BATCH_RUNS = 4


def default_batch_runs(setup: Setup, devices: Sequence, n_runs: int) -> int:
    """Runs vmapped together per device: all of a device's runs on a GPU; on a
    CPU `CPU_BATCH_RUNS`, which shares the per-operation overhead of small
    steps (a head alone on frozen features trains twice as fast, a whole
    network 5-8% faster; the README's measurements), except with the linear
    probe, whose vmapped line search runs every run as long as the slowest."""
    if devices[0].platform != "cpu":
        return -(-n_runs // len(devices))
    return 1 if "probe_acc" in setup.scored else CPU_BATCH_RUNS


def train_grid(setup: Setup, values: dict[str, Sequence], *, pretrained: Sequence[np.ndarray] = (),
               devices: Sequence | None = None, batch_runs: int | None = None) -> tuple[dict, Timing]:
    """Train every run of a grid in one compiled program.

    `values` maps each key of `RUN_VALUES` (those in `OPTIONAL` default to
    0) to a sequence of length `runs`;
    `pretrained`, for a `setup.pretrained` grid, is `flat_params` of the
    pretrained networks stacked by seed. Returns `train_run`'s output with a
    leading `runs` axis on every array, and the compile and training times.
    Runs are padded to a multiple of the device count times `batch_runs`
    (copies of the last run) and the padding dropped. Each device trains `batch_runs` runs at a
    time (vmapped); by default see `default_batch_runs`.
    """
    devices = tuple(devices or jax.devices())
    n_runs = len(values["seed"])
    batch_runs = batch_runs or default_batch_runs(setup, devices, n_runs)
    shard = len(devices) * batch_runs
    padded = -(-n_runs // shard) * shard
    start = time.perf_counter()
    if setup.pretrained != bool(pretrained):
        raise ValueError("pass pretrained weights exactly when setup.pretrained is set")
    hits = devices_lib.cache_counts()[0]
    program, sharding, replicated = _compiled(setup, devices, padded, batch_runs,
                                              tuple(np.shape(w) for w in pretrained))
    compiled = time.perf_counter()
    hits = devices_lib.cache_counts()[0] - hits
    args = {k: np.asarray(values[k] if k in values or k not in OPTIONAL else np.zeros(n_runs), dtype=dt)
            for k, dt in RUN_VALUES.items()}
    args = {k: jax.device_put(np.pad(v, (0, padded - n_runs), mode="edge"), sharding)
            for k, v in args.items()}
    weights = tuple(jax.device_put(np.asarray(w, np.float32), replicated) for w in pretrained)
    out = wait(program(args, weights))
    trained = time.perf_counter()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        out = multihost_utils.process_allgather(out, tiled=True)
    metrics = jax.tree.map(lambda v: np.asarray(v)[:n_runs], out)
    return metrics, Timing(compiled - start, trained - compiled, batch_runs, hits)
