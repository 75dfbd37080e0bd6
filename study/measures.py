"""Measures computed inside a training program, as pure functions of arrays:
the distinct units of a layer, linear CKA, the per-layer weight measures
and sampled weights of `Tracking`, and the converged linear probe.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from study.config import Setup

PROBE_STEPS = 100  # L-BFGS iterations of the linear probe


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
        for k in setup.tracking.measures:
            if k in row:  # reset_acc comes from the loop
                measures.setdefault(k, []).append(row[k])
        sampled.append(path[::every, idx])
    kept = slice(setup.tracking.measures_every - 1, None, setup.tracking.measures_every)
    return {k: jnp.stack(v, axis=1)[kept] for k, v in measures.items()}, jnp.stack(sampled, axis=1)


def moments(x: jax.Array, used: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-feature mean and standard deviation (+1e-6) over the `used` rows of x."""
    weights = used[:, None] / jnp.sum(used)
    mean = jnp.sum(weights * x, 0)
    return mean, jnp.sqrt(jnp.sum(weights * (x - mean) ** 2, 0)) + 1e-6


def linear_probe(x: jax.Array, y: jax.Array, used: jax.Array, x_eval: jax.Array, y_eval: jax.Array,
                 n_out: int) -> jax.Array:
    """The accuracy on (x_eval, y_eval) of a converged linear probe fitted
    on the `used` rows of (x, y): multinomial logistic regression on the
    features standardized over those rows, with scikit-learn's default L2
    penalty (C = 1), fitted full batch by L-BFGS (optax, zoom line search).
    The reference a trained head is held against."""
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

    w = {"kernel": jnp.zeros((x.shape[1], n_out)), "bias": jnp.zeros(n_out)}
    (w, _), _ = jax.lax.scan(step, (w, solver.init(w)), length=PROBE_STEPS)
    return jnp.mean(jnp.argmax(logits(w, x_eval), -1) == y_eval)
