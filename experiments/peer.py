"""The peer workload of `study bench peer`: an initialization grid small
enough to train the same way in PyTorch (`study.peer_torch`), so the engine's
speed can be compared with a strong implementation on one machine.

12-d two Gaussians (identity covariance, means 1 apart in every dimension),
400 training and 100 test points per seed; an MLP 12-32-32-32-2 with ReLU
and zero biases; full-batch plain SGD at 0.1 for 1000 epochs, test accuracy
every epoch; 16 seeds x 11 initialization schemes = 176,000 run-epochs.
"""

from __future__ import annotations

import itertools

import pandas as pd

from study.data import TwoGaussians
from study.runner import Program
from study.config import Setup

SCHEMES = ("glorot_normal", "glorot_uniform", "he_normal", "lecun_normal", "orthogonal",
           "normal_0.01", "normal_0.1", "normal_1", "normal_10", "zeros", "constant_1")
SEEDS, EPOCHS, LEARNING_RATE = 16, 1000, 0.1


def plan(seeds: int | None = None, epochs: int | None = None) -> list[Program]:
    """One program: every scheme and seed; nothing scored but the test split."""
    seeds, epochs = seeds or SEEDS, epochs or EPOCHS
    setup = Setup(task=TwoGaussians(), hidden=(32, 32, 32), optimizer="sgd", schemes=SCHEMES, batch_size=None,
                  epochs=epochs, evals=1, scored=())
    runs = pd.DataFrame([{"init": s, "activation": "relu", "seed": seed, "data_seed": seed, "lr": LEARNING_RATE}
                         for s, seed in itertools.product(SCHEMES, range(seeds))])
    return [Program("peer", setup, runs)]
