"""Tests for the bundled 8x8 digits data (strongticket.data.digits)."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from strongticket.data import digits, load_digits
from strongticket.data.digits import INPUT_SHAPE, NUM_CLASSES, _load_digits_from


def _packaged_path() -> Path:
    return Path(str(resources.files("strongticket.data").joinpath("digits.npz")))


def test_shapes_dtypes_and_range() -> None:
    x, y = load_digits()
    assert x.shape == (1797, *INPUT_SHAPE) == (1797, 1, 8, 8)
    assert x.dtype == torch.float32
    assert y.shape == (1797,)
    assert y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # values are k/16 for integer k in 0..16
    assert torch.equal(x * 16, torch.round(x * 16))
    assert NUM_CLASSES == 10


def test_class_counts() -> None:
    _, y = load_digits()
    counts = torch.bincount(y, minlength=NUM_CLASSES)
    assert counts.numel() == NUM_CLASSES
    assert int(counts.min()) >= 174 and int(counts.max()) <= 183
    assert int(counts.sum()) == 1797


def test_packaged_file_matches_pinned_sha256() -> None:
    data = _packaged_path().read_bytes()
    assert hashlib.sha256(data).hexdigest() == digits._SHA256


def test_load_from_path_equals_load_digits() -> None:
    x, y = load_digits()
    x2, y2 = _load_digits_from(_packaged_path())
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_tampered_copy_is_rejected(tmp_path: Path) -> None:
    data = bytearray(_packaged_path().read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "digits.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"integrity check.*sha256"):
        _load_digits_from(bad)


def test_tampered_contents_are_rejected_even_without_checksum(tmp_path: Path) -> None:
    with np.load(_packaged_path()) as npz:
        images, labels = npz["images"].copy(), npz["labels"]
    images[0, 0, 0] = 17
    bad = tmp_path / "digits.npz"
    np.savez_compressed(bad, images=images, labels=labels)
    with pytest.raises(ValueError, match="integrity check"):
        _load_digits_from(bad)
    with pytest.raises(ValueError, match="field 'images'"):
        _load_digits_from(bad, expected_sha256=None)

    np.savez_compressed(bad, images=images)
    with pytest.raises(ValueError, match="no field 'labels'"):
        _load_digits_from(bad, expected_sha256=None)


def test_missing_file_is_clear(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        _load_digits_from(missing)


def test_missing_packaged_file_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digits, "_FILENAME", "does_not_exist.npz")
    with pytest.raises(FileNotFoundError, match="does_not_exist.npz.*reinstall"):
        load_digits()


def test_equals_sklearn() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    ref = datasets.load_digits()
    x, y = load_digits()
    np.testing.assert_array_equal((x * 16).round().to(torch.int64).numpy().reshape(1797, 64), ref.data)
    np.testing.assert_array_equal(y.numpy(), ref.target)
    np.testing.assert_allclose(x.numpy().reshape(1797, 8, 8), ref.images / 16.0, rtol=0, atol=0)
