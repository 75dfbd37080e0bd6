"""Whole trainings as one compiled program per grid.

A `Setup` holds everything that shapes the program (sizes, activation, loss,
epochs); it is static, and changing it recompiles. Per-run values (seeds,
the index of the initialization scheme, the learning rate) are traced arrays
with a leading `runs` axis, so all seeds and value-conditions of a grid share
one program. The program is `jit(shard_map(lax.map(train_run)))`: runs are
spread over every device on a 1-D mesh named `runs`, and each device trains
its share one after another (or `batch_runs` at a time with `vmap`), every
training a `lax.scan` over epochs. Metrics come back as arrays; weights never
leave the device during training.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from study import data as data_lib
from study import inits
from study.models import MLP, layer_table, select_activation

LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}
# Per-run traced values and their dtypes; every grid supplies all of them.
RUN_VALUES = {"seed": np.int32, "data_seed": np.int32, "init": np.int32, "activation": np.int32,
              "lr": np.float32}
# Independent key streams derived from a run's seeds with `fold_in`. Keys
# depend on the seeds only, never on a run's position in the grid, so a run
# gives the same numbers alone or in any grid, and runs of different
# conditions with the same seed share their data (a paired comparison).
DATA_STREAM, INIT_STREAM, SHUFFLE_STREAM = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Setup:
    """The static part of a training program."""

    task: data_lib.TwoGaussians = data_lib.TwoGaussians()
    hidden: tuple[int, ...] = (100, 100)
    activations: tuple[str, ...] = ("relu",)  # the choices of the traced `activation`
    n_out: int = 2
    loss: str = "cross_entropy"  # or "mse" on one-hot targets, as the original code
    optimizer: str = "adam"
    schemes: tuple[str, ...] = ("glorot_uniform",)  # the choices of the traced `init`
    init_biases: bool = False  # biases drawn like the weights (original code)
    epochs: int = 100
    batch_size: int | None = 64  # None: full batch
    evals: int = 5  # large-sample scores per run, every epochs / evals epochs

    def __post_init__(self):
        inits.check_schemes(self.schemes)
        select_activation(self.activations, 0)
        for field, value, choices in [("loss", self.loss, LOSSES),
                                      ("optimizer", self.optimizer, OPTIMIZERS)]:
            if value not in choices:
                raise ValueError(f"unknown {field} {value!r}; choose from {', '.join(choices)}")
        if self.epochs < 1 or self.evals < 1 or self.epochs % self.evals:
            raise ValueError(f"epochs ({self.epochs}) must be a positive multiple of evals ({self.evals})")

    @property
    def batches_per_epoch(self) -> int:
        """Minibatches per epoch; the remainder of a reshuffled epoch is dropped."""
        return 1 if self.batch_size is None else self.task.n_train // self.batch_size

    @property
    def eval_every(self) -> int:
        return self.epochs // self.evals


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


def make_step(loss, tx: optax.GradientTransformation):
    """One training step as S-step describes it: forward pass and loss,
    gradient of the loss with respect to the parameters, update against it.

    `loss(params, x, y) -> scalar`; returns `step(params, opt_state, x, y) ->
    (params, opt_state, loss)`.
    """

    def step(params, opt_state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


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


def train_run(setup: Setup, values: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Train one run; `values` holds its traced scalars (see `RUN_VALUES`).

    Returns per-epoch metrics of shape (epochs,) (`eval_acc` is NaN off the
    stride) and per-run scalars of shape ().
    """
    seed_key = jax.random.key(values["seed"])
    data = data_lib.sample(setup.task, jax.random.fold_in(jax.random.key(values["data_seed"]), DATA_STREAM))
    model = build_model(setup, values, jax.random.fold_in(seed_key, INIT_STREAM))
    graphdef, params = nnx.split(model)
    tx = OPTIMIZERS[setup.optimizer](values["lr"])

    def logits_of(params, x):
        return nnx.merge(graphdef, params)(x)

    def loss(params, x, y):
        return loss_fn(setup, logits_of(params, x), y)

    def scores(params, x, y):
        logits = logits_of(params, x)
        return loss_fn(setup, logits, y), jnp.mean(jnp.argmax(logits, -1) == y)

    step = make_step(loss, tx)
    shuffle_key = jax.random.fold_in(seed_key, SHUFFLE_STREAM)

    def strided_metrics(params):
        """The costly metrics, computed only every `eval_every` epochs."""
        out = {"eval_acc": scores(params, data["x_eval"], data["y_eval"])[1]}
        for i in range(len(setup.hidden)):
            layer = params["layers"][i]
            out[f"distinct_h{i + 1}"] = distinct_units(layer["kernel"][...], layer["bias"][...])
        return out

    n_batches = setup.batches_per_epoch
    batch = setup.batch_size or setup.task.n_train

    def epoch(carry, index):
        params, opt_state = carry
        order = jax.random.permutation(jax.random.fold_in(shuffle_key, index), setup.task.n_train)
        order = order[: n_batches * batch].reshape(n_batches, batch)

        def minibatch(carry, idx):
            params, opt_state, _ = step(*carry, data["x_train"][idx], data["y_train"][idx])
            return (params, opt_state), None

        (params, opt_state), _ = jax.lax.scan(minibatch, (params, opt_state), order)
        train_loss, train_acc = scores(params, data["x_train"], data["y_train"])
        test_loss, test_acc = scores(params, data["x_test"], data["y_test"])
        metrics = {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                   "test_acc": test_acc, "diverged": ~jnp.isfinite(train_loss)}
        return (params, opt_state), metrics

    def block(carry, first):
        """`eval_every` epochs, then the costly metrics once."""
        carry, metrics = jax.lax.scan(epoch, carry, first + jnp.arange(setup.eval_every))
        return carry, (metrics, strided_metrics(carry[0]))

    carry = (params, tx.init(params))
    starts = jnp.arange(0, setup.epochs, setup.eval_every)
    _, (metrics, strided) = jax.lax.scan(block, carry, starts)
    metrics = {k: v.reshape(setup.epochs) for k, v in metrics.items()}
    for k, v in strided.items():  # NaN between the scored epochs
        metrics[k] = jnp.full(setup.epochs, jnp.nan).at[setup.eval_every - 1::setup.eval_every].set(v)
    metrics["bayes_acc"] = data["bayes_acc"]
    return metrics


@dataclasses.dataclass(frozen=True)
class Timing:
    compile_s: float
    train_s: float


@functools.lru_cache(maxsize=32)
def _compiled(setup: Setup, devices: tuple, n_runs: int, batch_runs: int):
    mesh = jax.sharding.Mesh(np.array(devices), ("runs",))
    per_device = functools.partial(jax.lax.map, functools.partial(train_run, setup),
                                   batch_size=batch_runs if batch_runs > 1 else None)
    program = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("runs"), out_specs=P("runs"),
                                      check_vma=False))
    sharding = jax.sharding.NamedSharding(mesh, P("runs"))
    shapes = {k: jax.ShapeDtypeStruct((n_runs,), dt, sharding=sharding) for k, dt in RUN_VALUES.items()}
    return program.lower(shapes).compile(), sharding


def train_grid(setup: Setup, values: dict[str, Sequence], *, devices: Sequence | None = None,
               batch_runs: int = 1) -> tuple[dict[str, np.ndarray], Timing]:
    """Train every run of a grid in one compiled program.

    `values` maps each key of `RUN_VALUES` to a sequence of length `runs`.
    Returns each metric with a leading `runs` axis, (runs, epochs) or (runs,),
    and the compile and training times. Runs are padded to a multiple of the
    device count (copies of the last run) and the padding dropped.
    """
    devices = tuple(devices or jax.devices())
    n_runs = len(values["seed"])
    shard = len(devices) * batch_runs
    padded = -(-n_runs // shard) * shard
    start = time.perf_counter()
    program, sharding = _compiled(setup, devices, padded, batch_runs)
    compiled = time.perf_counter()
    args = {k: np.asarray(values[k], dtype=dt) for k, dt in RUN_VALUES.items()}
    args = {k: jax.device_put(np.pad(v, (0, padded - n_runs), mode="edge"), sharding)
            for k, v in args.items()}
    out = jax.block_until_ready(program(args))
    trained = time.perf_counter()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        out = multihost_utils.process_allgather(out, tiled=True)
    metrics = {k: np.asarray(v)[:n_runs] for k, v in out.items()}
    return metrics, Timing(compile_s=compiled - start, train_s=trained - compiled)
