"""Token-sequence tasks generated offline: sort or reverse a sequence of tokens, one label per position.

``seq-sort``: the input is ``length`` tokens drawn uniformly from ``vocab``; the label at position t is the t-th
smallest input token (the sorted sequence). ``seq-reverse``: the label at position t is the input token at
``length - 1 - t``. Both need attention (every output depends on the whole sequence), so a random unmasked
transformer sits at chance and a trained one is near perfect.

The examples come from Philox(``SEQUENCE_TASK_SEED``, task) — fixed for good, like the digits split — so every
run and every ticket sees the same data: ``n_train`` training and ``n_test`` test sequences, all distinct from
one another where the space allows (duplicates are dropped before the split, so no test sequence is a training
one). Inputs are int64 (n, length), labels int64 (n, length); the network outputs (batch, vocab, length), torch's
layout for per-position cross-entropy, and accuracy is per token.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SEQUENCE_TASKS", "SEQUENCE_TASK_SEED", "make_sequences", "chance_accuracy"]

SEQUENCE_TASKS = ("sort", "reverse")
SEQUENCE_TASK_SEED = 0x5E0
LENGTH, VOCAB = 10, 10
N_TRAIN, N_TEST = 20_000, 2_000


def _labels(task: str, x: np.ndarray) -> np.ndarray:
    if task == "sort":
        return np.sort(x, axis=1)
    if task == "reverse":
        return x[:, ::-1].copy()
    raise ValueError(f"task must be one of {', '.join(SEQUENCE_TASKS)}, got {task!r}")


def make_sequences(task: str, *, length: int = LENGTH, vocab: int = VOCAB, n_train: int = N_TRAIN,
                   n_test: int = N_TEST) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, test_x, test_y) of ``task``, int64, distinct sequences, from the fixed task seed."""
    if task not in SEQUENCE_TASKS:
        raise ValueError(f"task must be one of {', '.join(SEQUENCE_TASKS)}, got {task!r}")
    for name, value, low, high in (("length", length, 2, 256), ("vocab", vocab, 2, 4096),
                                   ("n_train", n_train, 1, 1 << 22), ("n_test", n_test, 1, 1 << 22)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    total = n_train + n_test
    if vocab ** length < 2 * total:
        raise ValueError(f"n_train + n_test must be at most half the {vocab}^{length} distinct sequences, got {total}")
    rng = np.random.Generator(np.random.Philox(key=[SEQUENCE_TASK_SEED, SEQUENCE_TASKS.index(task)]))
    x = rng.integers(0, vocab, size=(total + total // 4 + 16, length), dtype=np.int64)
    _, first = np.unique(x, axis=0, return_index=True)
    x = x[np.sort(first)]  # distinct, in draw order
    while x.shape[0] < total:  # (a small space: draw more, keep the new distinct ones)
        more = rng.integers(0, vocab, size=(total, length), dtype=np.int64)
        x = np.concatenate([x, more])
        _, first = np.unique(x, axis=0, return_index=True)
        x = x[np.sort(first)]
    x = x[:total]
    y = _labels(task, x)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def chance_accuracy(train_y: np.ndarray, test_y: np.ndarray) -> float:
    """The per-token test accuracy of the best input-blind predictor: the most frequent training label of each
    position (1/vocab for reverse; more for sort, whose first and last positions are skewed)."""
    hits = 0
    for t in range(train_y.shape[1]):
        values, counts = np.unique(train_y[:, t], return_counts=True)
        hits += int((test_y[:, t] == values[counts.argmax()]).sum())
    return hits / test_y.size
