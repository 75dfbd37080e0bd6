"""One run, top to bottom: `train_run` starts it (`start_run`: its data,
initial parameters and key streams), splits its epochs into phases
(`phases`), trains each phase (`train_phase`: a `lax.scan` over blocks of
`eval_every` epochs, each a `lax.scan` of `train_epoch`, then the strided
scores) and finishes with the once-per-run scores and, with `Tracking`, the
weight measures. Everything here is traced inside the grid's program
(`study.grid`); metrics come back as arrays and weights never leave the
device during training.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from study import data as data_lib
from study import measures
from study.config import DATA_STREAM, DROPOUT, DROPOUT_STREAM, INIT_STREAM, SHUFFLE_STREAM, Setup, Start
from study.network import (
    build_model, dropout, flat_params, forward_model, frozen_step, kernels, load_body, loss_fn, penalty,
)


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
    layers (None: all) at the phase's own rate `lr`, the output layer at its
    own `head_lr` (None: at `lr`). These are the rates the phase's step
    uses; which of the run's traced rates they are is decided by `phases`."""

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


class Best(NamedTuple):
    """The scored epoch with the best validation accuracy so far and its weights."""

    val_acc: jax.Array
    epoch: jax.Array
    params: nnx.State


# A run, top to bottom.


def train_run(setup: Setup, values: dict[str, jax.Array],
              pretrained: tuple[jax.Array, ...] = ()) -> dict[str, dict | jax.Array]:
    """Train one run; `values` holds its traced scalars (see `config.RUN_VALUES`).

    Returns `{"epochs": ...}`: per-epoch metrics of shape (epochs,)
    (strided ones NaN off the stride) and per-run scalars of shape (); with
    tracking also `"layers"` and `"weights"` (see `track`); with
    `keep_params` also `"params"`, the final `network.flat_params`. With
    `setup.pretrained` the hidden layers start from `pretrained`'s row
    `values["seed"]`.
    """
    return train_from(setup, start_run(setup.start, values, pretrained))


def start_run(start: Start, values: dict, pretrained: tuple = ()) -> Run:
    """Draw the run's data and initial parameters, loading a pretrained body
    (`start`: what of the run's `Setup` this reads).

    Runs start one at a time even when they train `batch_runs` at a time:
    batched LAPACK calls (the QR of orthogonal initialization and of a
    `Mixture`'s geometry) can deadlock XLA's CPU thread pool."""
    seed_key = jax.random.key(values["seed"])
    data_key = jax.random.fold_in(jax.random.key(values["data_seed"]), DATA_STREAM)
    data = data_lib.sample(start.task, data_key, values["similarity"])
    model = build_model(start, values, jax.random.fold_in(seed_key, INIT_STREAM))
    params = nnx.state(model)
    if start.pretrained:
        params = load_body(params, pretrained, values["seed"])
    return Run(values, data, params, jax.random.fold_in(seed_key, SHUFFLE_STREAM),
               jax.random.fold_in(seed_key, DROPOUT_STREAM))


def phases(setup: Setup, values: dict) -> list[Phase]:
    """The head alone first when `head_first`, at the run's `head_lr`; then
    the top `trainable` layers at the run's `lr`, the head at its own
    `head_lr` with `own_head_lr` unless it already trained alone."""
    head_lr = values["head_lr"] if setup.own_head_lr else None
    if not setup.head_first:
        return [Phase(0, setup.epochs, setup.trainable, lr=values["lr"], head_lr=head_lr)]
    return [Phase(0, setup.head_first, 1, lr=head_lr, head_lr=None),
            Phase(setup.head_first, setup.epochs - setup.head_first, setup.trainable, lr=values["lr"], head_lr=None)]


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
    evaluate = functools.partial(accuracy, setup, run, x=view.data["x_eval"], y=run.data["y_eval"], start=view.start)
    if setup.final_eval:
        at_end = {"eval_acc": evaluate(params=params)} if "eval_acc" in setup.scored else {}
        at_end |= distinct_units(setup, params) if "distinct_units" in setup.scored else {}
        metrics |= {k: jnp.full(setup.epochs, jnp.nan).at[-1].set(v) for k, v in at_end.items()}
    metrics["bayes_acc"] = run.data["bayes_acc"]
    if "val_acc" in setup.scored:
        metrics["best_epoch"] = best.epoch
    if {"val_acc", "eval_acc"} <= set(setup.scored):
        metrics["best_eval_acc"] = evaluate(params=best.params)
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


def train_phase(setup: Setup, run: Run, params, best: Best, phase: Phase):
    """Train one phase: its view of the data, the final parameters, the
    best-validated ones so far, per-epoch metrics (epochs,) and the strided
    ones (epochs / eval_every,)."""
    view = frozen_view(setup, run, params, phase.trainable)
    loss = objective(setup, run, view.start)
    step, tx = frozen_step(setup, phase.lr, run.values["strength"], params, loss, phase.trainable, phase.head_lr,
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
    metrics["test_acc"] = accuracy(setup, run, params, view.data["x_test"], run.data["y_test"], view.start)
    metrics["diverged"] = ~jnp.isfinite(metrics["train_loss"])
    if setup.tracking:
        metrics["params"] = params
    return (params, opt_state), metrics


def strided_metrics(setup: Setup, run: Run, view: View, params) -> dict:
    """The strided metrics of `setup.scored`, every `eval_every` epochs."""
    out = {}
    for name in ("eval", "val"):
        if f"{name}_acc" in setup.scored and not (name == "eval" and setup.final_eval):
            out[f"{name}_acc"] = accuracy(setup, run, params, view.data[f"x_{name}"], run.data[f"y_{name}"],
                                          view.start)
    if "train_acc" in setup.scored:
        out["train_acc"] = accuracy(setup, run, params, view.data["x_train"], run.data["y_train"], view.start)
    if "distinct_units" in setup.scored and not setup.final_eval:
        out.update(distinct_units(setup, params))
    return out


def distinct_units(setup: Setup, params) -> dict[str, jax.Array]:
    """The distinct units of each hidden layer (`measures.distinct_units`)."""
    return {f"distinct_h{i + 1}": measures.distinct_units(params["layers"][i]["kernel"][...],
                                                          params["layers"][i]["bias"][...])
            for i in range(len(setup.hidden))}


def keep_best(best: Best, strided: dict, epoch: jax.Array, params) -> Best:
    """`best`, or this scored epoch's weights where they validate strictly better."""
    if "val_acc" not in strided:
        return best
    return jax.tree.map(lambda new, old: jnp.where(strided["val_acc"] > best.val_acc, new, old),
                        Best(strided["val_acc"], epoch, params), best)


# Scores taken once per run, after training.


def initial_grad_norms(setup: Setup, run: Run) -> dict[str, jax.Array]:
    """`grad_norm_l<i>`: the norm of the data loss's gradient with respect to
    weight matrix i at the initial weights, on the whole training set: how
    much signal each layer gets at the start (none through symmetric or
    vanishing weights)."""
    x, y = run.data["x_train"], run.data["y_train"]
    grads = jax.grad(lambda p: loss_fn(setup, outputs(setup, run, p, x)[-1], y))(run.initial)
    return {f"grad_norm_l{i}": jnp.linalg.norm(w) for i, w in enumerate(kernels(grads))}


def probe_accuracy(setup: Setup, run: Run, view: View) -> jax.Array:
    """The large-sample accuracy of a converged linear probe
    (`measures.linear_probe`) on the frozen features of `view`, fitted on
    the run's training prefix."""
    return measures.linear_probe(view.data["x_train"], run.data["y_train"], used_points(setup, run),
                                 view.data["x_eval"], run.data["y_eval"], setup.n_out)


def track(setup: Setup, run: Run, final, history) -> dict:
    """Per-layer measures (epochs, layers) and, after training, the accuracy
    with each layer reset to its initial weights (Zhang et al., 2019),
    (layers,); the sampled weights (records, layers, weights)."""
    probe = run.data["x_eval"][:setup.tracking.probe]
    probed = jax.tree.map(lambda v: v[setup.tracking.probe_epochs(setup.epochs)], history)
    outs = jax.vmap(lambda p: outputs(setup, run, p, probe))(probed)
    layers, sampled = measures.weight_measures(setup, kernels(run.initial), kernels(history),
                                               outputs(setup, run, final, probe), outs)

    def reset(i):
        mixed = jax.tree_util.tree_map_with_path(lambda path, p, p0: p0 if path[1].key == i else p,
                                                 final, run.initial)
        return accuracy(setup, run, mixed, run.data["x_eval"], run.data["y_eval"])

    if "reset_acc" in setup.tracking.measures:
        layers["reset_acc"] = jnp.stack([reset(i) for i in range(len(setup.hidden) + 1)])
    return {"layers": layers, "weights": sampled}


# What the phases share: forward passes, the objective, the data they train on.


def outputs(setup: Setup, run: Run, params, x: jax.Array, start: int = 0, drop=None) -> list[jax.Array]:
    """Every layer's output from layer `start` on (see `MLP.outputs`)."""
    return forward_model(setup, run.values, params).outputs(x, drop, start)


def accuracy(setup: Setup, run: Run, params, x: jax.Array, y: jax.Array, start: int = 0):
    """The network's accuracy on (x, y)."""
    logits = outputs(setup, run, params, x, start)[-1]
    return jnp.mean(jnp.argmax(logits, -1) == y)


def objective(setup: Setup, run: Run, start: int):
    """`loss(params, x, y, key) -> (loss + penalty, loss)`: what a step
    minimizes, and the data loss it reports as `train_loss`."""

    def loss(params, x, y, key):
        drop = None
        if setup.regularizer in DROPOUT:
            hidden = run.values["strength"] if setup.regularizer == "dropout" else setup.hidden_dropout
            drop = dropout(key, setup.input_dropout, hidden)
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
    if not start or setup.regularizer in DROPOUT:
        return View(run.data)
    features = {k: outputs(setup, run, params, run.data[k])[start - 1] for k in INPUTS}
    if setup.standardize_features:
        mean, std = measures.moments(features["x_train"], used_points(setup, run))
        features = {k: (v - mean) / std for k, v in features.items()}
    return View({**run.data, **features}, start)


def used_points(setup: Setup, run: Run) -> jax.Array:
    """Which training points the run uses: a `Mixture` run's traced prefix, else all."""
    n = len(run.data["y_train"])
    if isinstance(setup.task, data_lib.Mixture):
        return jnp.arange(n) < run.values["n_target"] * setup.task.classes
    return jnp.ones(n, bool)


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


