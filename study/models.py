"""Flax NNX multilayer perceptrons and their layer table.

Training keeps the hot loop functional: a model is built once per run, split
into a graph definition and a parameter pytree (`nnx.split`), and merged back
inside the pure step, as Flax's performance guide advises for many small runs
under `jit`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
from flax import nnx

from study.inits import Initializer

Dropout = Callable[[jax.Array, int], jax.Array]
ACTIVATIONS = {"relu": nnx.relu, "tanh": nnx.tanh, "sigmoid": nnx.sigmoid}


def select_activation(names: Sequence[str], index: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """The activation `names[index]`, with `index` a traced int32 scalar: one
    program serves every activation of a grid."""
    unknown = [n for n in names if n not in ACTIVATIONS]
    if unknown:
        raise ValueError(f"unknown activation {unknown[0]!r}; choose from {', '.join(ACTIVATIONS)}")
    branches = [ACTIVATIONS[n] for n in names]
    if len(branches) == 1:  # no switch: under vmap a switch computes every branch
        return branches[0]
    return lambda x: jax.lax.switch(index, branches, x)


class MLP(nnx.Module):
    """Dense layers `in -> hidden... -> out`, an activation after each hidden layer."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, *,
                 activation: Callable[[jax.Array], jax.Array],
                 kernel_init: Initializer, bias_init: Initializer, rngs: nnx.Rngs):
        sizes = [n_in, *hidden, n_out]
        self.layers = nnx.List([
            nnx.Linear(a, b, kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)
            for a, b in zip(sizes[:-1], sizes[1:])
        ])
        self.activation = activation

    def __call__(self, x: jax.Array, drop: Dropout | None = None) -> jax.Array:
        """x (batch, n_in) -> logits (batch, n_out)."""
        return self.outputs(x, drop)[-1]

    def outputs(self, x: jax.Array, drop: Dropout | None = None, start: int = 0) -> list[jax.Array]:
        """The outputs of layers `start`, `start + 1`, ...: the hidden
        activations, then the logits; `x` is layer `start`'s input.

        `drop(x, i)`, when given, is applied to the input of layer `i`
        (0: the network's input), e.g. dropout during training.
        """
        outs = []
        for i in range(start, len(self.layers)):
            x = self.layers[i](drop(x, i) if drop else x)
            x = x if i == len(self.layers) - 1 else self.activation(x)
            outs.append(x)
        return outs


def layer_table(model: MLP) -> list[dict]:
    """One row per layer: its name, kernel and bias shapes and parameter count
    (S-tricks' "visualize the model"), stored with the results for the report."""
    rows = []
    for i, layer in enumerate(model.layers):
        kernel, bias = layer.kernel.shape, layer.bias.shape
        kind = "output" if i == len(model.layers) - 1 else f"hidden {i + 1}"
        rows.append({"layer": kind, "kernel": list(kernel), "bias": list(bias),
                     "params": int(kernel[0] * kernel[1] + bias[0])})
    return rows
