"""The peer workload trained the strong PyTorch way, for `study bench peer --torch`.

So the JAX engine can be compared against PyTorch on the same machine: the
seeds x initialization-scheme grid of MLPs on two 12-dimensional Gaussians,
all runs stacked with `torch.func.stack_module_state` and trained together by
one `torch.compile`d, `vmap`ped step (forward, backward, SGD update, test
accuracy) called from a Python loop with no host sync inside it. The time
reported runs from the first data drawn to the last epoch's results fetched,
compilation included.
"""

from __future__ import annotations

import copy
import functools
import os
import time

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.nn import functional as F
from torch.nn import init

SCHEMES = (
    "glorot_normal", "glorot_uniform", "he_normal", "lecun_normal", "orthogonal",
    "normal_0.01", "normal_0.1", "normal_1", "normal_10", "zeros", "constant_1",
)
DIM, HIDDEN, DEPTH, CLASSES = 12, 32, 3, 2
POINTS, TRAIN = 500, 400
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
INIT_SEED_OFFSET = 2**32  # keeps init generators' seeds apart from data seeds

_WEIGHT_INITS = {
    "glorot_normal": init.xavier_normal_,
    "glorot_uniform": init.xavier_uniform_,
    "he_normal": functools.partial(init.kaiming_normal_, nonlinearity="relu"),
    "lecun_normal": lambda w, generator: init.normal_(
        w, std=(1 / w.shape[1]) ** 0.5, generator=generator),
    "orthogonal": init.orthogonal_,
    **{f"normal_{std}": functools.partial(init.normal_, std=float(std))
       for std in ("0.01", "0.1", "1", "10")},
    "zeros": lambda w, generator: init.zeros_(w),
    "constant_1": lambda w, generator: init.ones_(w),
}


def make_data(seed: int) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_test, y_test): balanced labels in random order,
    class 1's mean shifted by 1 in every dimension, identity covariance."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(POINTS) % CLASSES
    labels = labels[torch.randperm(POINTS, generator=gen)]
    x = torch.randn(POINTS, DIM, generator=gen) + labels[:, None].float()
    return x[:TRAIN], labels[:TRAIN], x[TRAIN:], labels[TRAIN:]


def make_model(scheme: str, generator: torch.Generator) -> nn.Sequential:
    """The MLP with its weights drawn by `scheme` and zero biases."""
    widths = [DIM] + [HIDDEN] * DEPTH + [CLASSES]
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            _WEIGHT_INITS[scheme](linear.weight, generator=generator)
            linear.bias.zero_()
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def make_step(model: nn.Module, lr: float):
    """One epoch of every run: a full-batch SGD step and the test accuracy
    after it, vmapped over the stacked runs."""
    def loss_fn(params, x, y):
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    def step(params, x, y, x_test, y_test):
        grads, loss = grad_and_value(loss_fn)(params, x, y)
        params = {k: p - lr * grads[k] for k, p in params.items()}
        hits = functional_call(model, params, (x_test,)).argmax(-1) == y_test
        return params, loss, hits.float().mean()

    return vmap(step)


def first_working(step, args):
    """The first of the compiled modes (then eager) that runs `step` on
    `args`, with the result of that call."""
    for mode in COMPILE_MODES:
        try:
            compiled = torch.compile(step, mode=mode)
            return compiled, compiled(*args)
        except Exception as err:  # noqa: BLE001 - any compile failure falls through
            print(f"peer_torch: torch.compile mode={mode!r} failed ({err!r:.200})")
    return step, step(*args)


def train_peer(seeds: int = 16, epochs: int = 1000, lr: float = 0.1) -> dict:
    """Returns {"wall_s": float (from the first data to the last epoch, compile included),
               "run_epochs": int, "final_test_acc": numpy array (runs,), "schemes": tuple}
    plus the per-epoch "train_loss" and "test_acc" histories, (epochs, runs).
    Runs are seed-major: run = seed * len(SCHEMES) + scheme index. On a
    GPU when torch sees one, as the engine would be."""
    torch.set_num_threads(os.cpu_count())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    data = [torch.stack(part) for part in zip(*(make_data(s) for s in range(seeds)))]
    run_seed = torch.arange(seeds).repeat_interleave(len(SCHEMES))
    data = [part[run_seed].to(device) for part in data]
    models = [make_model(scheme, torch.Generator().manual_seed(
                  INIT_SEED_OFFSET + seed * len(SCHEMES) + k))
              for seed in range(seeds) for k, scheme in enumerate(SCHEMES)]
    params, _ = stack_module_state(models)
    params = {k: p.detach().to(device) for k, p in params.items()}
    base = copy.deepcopy(models[0]).to("meta")
    losses = torch.empty(epochs, len(models), device=device)
    accs = torch.empty(epochs, len(models), device=device)
    step, (params, losses[0], accs[0]) = first_working(make_step(base, lr), (params, *data))
    for epoch in range(1, epochs):
        params, losses[epoch], accs[epoch] = step(params, *data)
    accs, losses = accs.cpu().numpy(), losses.cpu().numpy()
    return {"wall_s": time.perf_counter() - start, "run_epochs": len(models) * epochs,
            "final_test_acc": accs[-1], "schemes": SCHEMES,
            "train_loss": losses, "test_acc": accs}
