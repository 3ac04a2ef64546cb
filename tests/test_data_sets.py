"""Data sets from local files through the search: splits, normalization, augmentation, a conv4 run end to end."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from strongticket.cli import main
from strongticket.config import SearchConfig
from strongticket.data.splits import batches, load_splits
from strongticket.evaluate import evaluate_ticket
from strongticket.search import run_search


def _write_fake_cifar10(root, n_per_batch=40):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, n_per_batch)
        # class-dependent brightness so a tiny net can learn something
        data = np.clip(rng.normal(20 * labels[:, None], 30, (n_per_batch, 3072)), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data}, fh, protocol=2)


def _write_fake_mnist(root, n_train=50, n_test=20):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)

    def idx(array, code):
        return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()

    for prefix, n in (("train", n_train), ("t10k", n_test)):
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 0x08)))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx((np.arange(n) % 10).astype(np.uint8), 0x08))


def test_mnist_files_load_as_splits_with_the_files_test_set(tmp_path):
    _write_fake_mnist(tmp_path)
    splits = load_splits("mnist", root=tmp_path, val_fraction=0.2)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 20)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert splits.train.x.dtype == torch.uint8
    batch = next(batches(splits.test, 8))
    assert batch.x.dtype == torch.float32 and batch.x.shape == (8, 1, 28, 28)
    torch.testing.assert_close(batch.x, (splits.test.x[:8].float() / 255 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)


def test_missing_data_root_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="data mnist is read from local files: give data_root"):
        load_splits("mnist")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_splits("mnist", root=tmp_path)


def test_cifar_training_batches_are_augmented_deterministically_and_eval_batches_are_not(tmp_path):
    _write_fake_cifar10(tmp_path)
    splits = load_splits("cifar10", root=tmp_path)
    assert splits.train.crop_padding == 4 and splits.val.crop_padding == 0 and splits.test.crop_padding == 0
    a = [b.x for b in batches(splits.train, 64, seed=3, epoch=1, augment=True)]
    b = [b.x for b in batches(splits.train, 64, seed=3, epoch=1, augment=True)]
    plain = [b.x for b in batches(splits.train, 64, seed=3, epoch=1, augment=False)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, plain))
    assert all(x.shape == y.shape for x, y in zip(a, plain))


@pytest.mark.slow
def test_conv4_search_on_fake_cifar_runs_end_to_end_and_eval_agrees(tmp_path):
    _write_fake_cifar10(tmp_path / "data")
    cfg = SearchConfig(data="cifar10", data_root=str(tmp_path / "data"), model="conv4", width=0.125,
                       widths=(16,), epochs=2, batch_size=32, out=str(tmp_path / "run"))
    summary = run_search(cfg, progress=False)
    # width 0.125 scales the convs (64, 128 -> 8, 16) and the hidden width (16 -> 2)
    assert summary["total_weights"] == 3 * 8 * 9 + 8 * 8 * 9 + 8 * 16 * 9 + 16 * 16 * 9 + 16 * 64 * 2 + 2 * 10
    result = evaluate_ticket(tmp_path / "run" / "ticket.safetensors", device="cpu")
    assert result["test_acc"] == summary["test_acc"]


@pytest.mark.slow
def test_resnet_with_batch_norm_ticket_reproduces_its_accuracy(tmp_path, capsys):
    _write_fake_cifar10(tmp_path / "data", n_per_batch=16)
    argv = ["search", "--data", "cifar10", "--data-root", str(tmp_path / "data"), "--model", "resnet20",
            "--width", "0.25", "--epochs", "2", "--batch-size", "32", "--learn-bn", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    summary = (tmp_path / "r" / "summary.json").read_text()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r" / "ticket.safetensors")]) == 0
    assert "same as the run's" in capsys.readouterr().out
    assert '"test_acc"' in summary
