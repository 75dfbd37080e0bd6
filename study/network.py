"""The network and its training step: the model, the data loss, the
regularizers (penalty, dropout, proximal L1 and max-norm projections), the
optimizer, and the step that trains only the top layers of a network over
frozen ones (with the parameter plumbing of transfer: labels, flat
parameters, a pretrained body).

Rates are explicit arguments: `optimizer` and `frozen_step` take the rate
of the layers they train (and the head's own rate), never a run's values,
so the rate a step uses is the one its caller names (a phase's, see
`study.loop.Phase`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from study import inits
from study.config import MAX_NORM, OPTIMIZERS, Setup, Start
from study.models import MLP, layer_table, select_activation


def build_model(setup: Setup | Start, values: dict, key) -> MLP:
    """The run's model; `values["init"]` and `values["activation"]` may be traced."""
    kernel_init = inits.select(setup.schemes, values["init"])
    bias_init = inits.like_weights(kernel_init) if setup.init_biases else nnx.initializers.zeros
    return MLP(setup.task.dim, setup.hidden, setup.n_out,
               activation=select_activation(setup.activations, values["activation"]),
               kernel_init=kernel_init, bias_init=bias_init, rngs=nnx.Rngs(key))


def abstract_model(start: Start) -> MLP:
    """`start`'s model with the first initialization scheme and activation, from shapes only (nothing is computed)."""
    return nnx.eval_shape(lambda: build_model(start, {"init": 0, "activation": 0}, jax.random.key(0)))


def model_table(setup: Setup) -> list[dict]:
    """The layer table of the setup's model."""
    return layer_table(abstract_model(setup.start))


@functools.lru_cache(maxsize=64)
def model_graph(start: Start) -> nnx.GraphDef:
    """The structure of `start`'s model, built once: tracing its initializers
    again for every forward pass was a third of a program's tracing time."""
    return nnx.graphdef(abstract_model(start))


def forward_model(setup: Setup, values: dict, params) -> MLP:
    """The run's model with `params`, for forward passes; `values["activation"]` may be traced."""
    model = nnx.merge(model_graph(setup.start), params)
    model.activation = select_activation(setup.activations, values["activation"])
    return model


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


def optimizer(setup: Setup, lr: jax.Array, strength: jax.Array, params,
              steps: int = 1) -> optax.GradientTransformation:
    """The optimizer at rate `lr` over a phase of `steps` steps, held
    constant, then decaying to 0 along a cosine over the last `setup.decay`
    share of them; proximal L1 (soft thresholding by lr * strength) and
    max-norm (bound `strength`) act on the weight matrices after each update."""
    tail = round(setup.decay * steps)
    rate = optax.join_schedules([optax.constant_schedule(lr), optax.cosine_decay_schedule(lr, tail)],
                                [steps - tail]) if tail else lr
    tx = OPTIMIZERS[setup.optimizer](rate)
    if setup.regularizer == "l1_prox":
        threshold = lr * strength
        project = lambda w: jnp.sign(w) * jnp.maximum(jnp.abs(w) - threshold, 0.0)  # noqa: E731
    elif setup.regularizer in MAX_NORM:  # each unit's incoming weights are a column
        project = lambda w: w * jnp.minimum(1.0, strength / jnp.linalg.norm(w, axis=0))  # noqa: E731
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


def frozen_step(setup: Setup, lr: jax.Array, strength: jax.Array, params, loss, trainable: int | None,
                head_lr: jax.Array | None = None, has_aux: bool = False, steps: int = 1):
    """The step and optimizer that train only the top `trainable` layers
    (None: all) of `params` at `lr`, the output layer at its own `head_lr`
    if given; `strength` is the regularizer's (see `optimizer`);
    `loss(params, *batch)` as for `make_step`. `optax.partition` hands each
    optimizer only its own leaves, so frozen ones get no optimizer state and
    a zero update; their gradients, never used, are left out of the compiled
    step, with the backward pass below the lowest trained layer."""
    tx = optimizer(setup, lr, strength, params, steps)
    if trainable is None and head_lr is None:
        return make_step(loss, tx, has_aux), tx
    labels = layer_labels(params, trainable, head=head_lr is not None)
    transforms = {"trained": tx, "frozen": optax.set_to_zero()}
    if head_lr is not None:
        transforms["head"] = optimizer(setup, head_lr, strength, params, steps)
    tx = optax.partition(transforms, labels)
    return make_step(loss, tx, has_aux), tx
