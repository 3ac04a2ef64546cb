"""Readers for MNIST/Fashion-MNIST (IDX), CIFAR (pickle batches) and image folders, on tiny fake files written
here in the exact on-disk formats."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from strongticket.data.cifar import load_cifar, safe_unpickle
from strongticket.data.idx import MNIST_FILES, load_mnist, read_idx
from strongticket.data.imagefolder import load_image_folder
from strongticket.random import STREAM_DATA, random_words

# ----------------------------------------------------------------------------------------------------------
# Helpers: deterministic fake contents and the on-disk formats
# ----------------------------------------------------------------------------------------------------------

_IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def _pixels(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Deterministic uint8 values of ``shape`` (Philox words, low byte)."""
    n = int(np.prod(shape))
    return (random_words(seed, 0, STREAM_DATA, np.arange(n))[0] & 0xFF).astype(np.uint8).reshape(shape)


def _idx_bytes(array: np.ndarray, code: int | None = None, ndim: int | None = None) -> bytes:
    """An IDX file: magic 00 00 <code> <ndim>, big-endian uint32 sizes, big-endian data."""
    code = _IDX_CODES[array.dtype.type] if code is None else code
    ndim = array.ndim if ndim is None else ndim
    header = bytes([0, 0, code, ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _write_mnist(root: Path, name: str = "MNIST", n_train: int = 7, n_test: int = 3, gz=(False, True, False, True)):
    raw = root / name / "raw"
    arrays = {
        "train-images-idx3-ubyte": _pixels((n_train, 28, 28), 1),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": _pixels((n_test, 28, 28), 2),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }
    for (file, array), zipped in zip(arrays.items(), gz):
        _write(raw / file, _idx_bytes(array), gz=zipped)
    return arrays


# ----------------------------------------------------------------------------------------------------------
# IDX / MNIST
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(_IDX_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_dtype_byte_exact(tmp_path, dtype, gz):
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    path = _write(tmp_path / "a-idx3", _idx_bytes(array), gz=gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == array.shape
    assert out.tobytes() == array.tobytes()


def test_read_idx_rejects_bad_magic_unknown_dtype_and_truncation(tmp_path):
    good = _idx_bytes(np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"bad-magic.*00 00"):
        read_idx(_write(tmp_path / "bad-magic", b"\x01" + good[1:]))
    with pytest.raises(ValueError, match=r"bad-code.*dtype code.*0x07"):
        read_idx(_write(tmp_path / "bad-code", good[:2] + b"\x07" + good[3:]))
    with pytest.raises(ValueError, match=r"truncated.*6 data bytes.*holds 5"):
        read_idx(_write(tmp_path / "truncated", good[:-1]))
    with pytest.raises(ValueError, match=r"short-header.*needs 12 bytes"):
        read_idx(_write(tmp_path / "short-header", good[:9]))
    with pytest.raises(ValueError, match=r"broken\.gz.*cannot be decompressed"):
        read_idx(_write(tmp_path / "broken.gz", gzip.compress(good)[:-6]))
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        read_idx(tmp_path / "nothing-here")


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_load_mnist_reads_torchvision_layout_byte_exact(tmp_path, name):
    arrays = _write_mnist(tmp_path, name)
    train_x, train_y, test_x, test_y = load_mnist(tmp_path, name)
    assert train_x.dtype == torch.uint8 and train_x.shape == (7, 1, 28, 28)
    assert test_x.shape == (3, 1, 28, 28)
    assert train_y.dtype == torch.int64 and test_y.dtype == torch.int64
    assert train_x.numpy().tobytes() == arrays["train-images-idx3-ubyte"].tobytes()
    assert test_x.numpy().tobytes() == arrays["t10k-images-idx3-ubyte"].tobytes()
    assert train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_load_mnist_missing_file_names_file_folder_and_all_four_names(tmp_path):
    _write_mnist(tmp_path)
    next((tmp_path / "MNIST" / "raw").glob("t10k-labels-idx1-ubyte*")).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte (or .gz) not found" in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert all(file in message for file in MNIST_FILES)
    with pytest.raises(FileNotFoundError, match="FashionMNIST"):
        load_mnist(tmp_path, "FashionMNIST")


def test_load_mnist_rejects_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="MNIST, FashionMNIST.*'KMNIST'"):
        load_mnist(tmp_path, "KMNIST")


@pytest.mark.parametrize(
    "file, array, message",
    [
        ("train-labels-idx1-ubyte", np.zeros((7, 28, 28), np.uint8), r"train-labels.*magic 0x00000801, got 0x00000803"),
        ("train-images-idx3-ubyte", np.zeros((7, 27, 28), np.uint8), r"train-images.*28x28, got 27x28"),
        ("train-images-idx3-ubyte", np.zeros((7, 28, 28), np.int32), r"magic 0x00000803, got 0x00000C03"),
        ("t10k-labels-idx1-ubyte", np.zeros((4,), np.uint8), r"3 images and 4 labels"),
        ("t10k-labels-idx1-ubyte", np.array([1, 10, 2], np.uint8), r"t10k-labels.*\[0, 10\), got 10"),
    ],
)
def test_load_mnist_rejects_malformed_files_naming_them(tmp_path, file, array, message):
    _write_mnist(tmp_path, gz=(False,) * 4)
    _write(tmp_path / "MNIST" / "raw" / file, _idx_bytes(array))
    with pytest.raises(ValueError, match=message):
        load_mnist(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# CIFAR
# ----------------------------------------------------------------------------------------------------------


def _cifar_batch(n: int, seed: int, label_keys: dict[bytes, int]) -> dict:
    """A batch dict with the real layout: bytes keys, uint8 (n, 3072) data, labels as lists of ints."""
    batch = {b"batch_label": b"fake batch", b"data": _pixels((n, 3072), seed),
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    for key, classes in label_keys.items():
        batch[key] = [int(v) for v in (np.arange(n) * 7 + seed) % classes]
    return batch


def _write_cifar10(root: Path, n: int = 4, protocol: int = pickle.DEFAULT_PROTOCOL) -> list[dict]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = []
    for i, file in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        batch = _cifar_batch(n + i, seed=10 + i, label_keys={b"labels": 10})
        with open(folder / file, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
        batches.append(batch)
    return batches


def _check_cifar(out, train_batches: list[dict], test_batches: list[dict], key: bytes):
    train_x, train_y, test_x, test_y = out
    for x, y, batches in ((train_x, train_y, train_batches), (test_x, test_y, test_batches)):
        n = sum(len(b[key]) for b in batches)
        assert x.dtype == torch.uint8 and x.shape == (n, 3, 32, 32)
        assert y.dtype == torch.int64 and y.shape == (n,)
        assert x.numpy().tobytes() == b"".join(b[b"data"].tobytes() for b in batches)
        assert y.tolist() == [v for b in batches for v in b[key]]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_cifar10_round_trips_byte_exact(tmp_path, protocol):
    batches = _write_cifar10(tmp_path, protocol=protocol)
    out = load_cifar(tmp_path, "cifar10")
    _check_cifar(out, batches[:5], batches[5:], b"labels")
    # channel planes: the first 1024 bytes of a row are the red 32x32 image
    assert torch.equal(out[0][0, 0], torch.from_numpy(batches[0][b"data"][0, :1024].reshape(32, 32)))


@pytest.mark.parametrize("label, key", [("fine", b"fine_labels"), ("coarse", b"coarse_labels")])
def test_load_cifar100_fine_and_coarse_labels(tmp_path, label, key):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    batches = {}
    for file, n in (("train", 9), ("test", 5)):
        batches[file] = _cifar_batch(n, seed=n, label_keys={b"fine_labels": 100, b"coarse_labels": 20})
        with open(folder / file, "wb") as f:
            pickle.dump(batches[file], f)
    out = load_cifar(tmp_path, "cifar100", label=label)
    _check_cifar(out, [batches["train"]], [batches["test"]], key)


def _py2_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """The bytes Python 2 + numpy 1.x wrote for the real CIFAR files: protocol 2, str (= bytes) keys, the array
    as ``numpy.core.multiarray._reconstruct`` + ``__setstate__`` with its raw data as a BINSTRING."""

    def binstring(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)) + b)

    def binint(v: int) -> bytes:
        return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)

    n, cols = data.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + binint(0) + b"\x85" + binstring(b"b")
        + b"\x87R"
        + b"(" + binint(1) + binint(n) + binint(cols) + b"\x86"
        + b"cnumpy\ndtype\n" + binstring(b"u1") + binint(0) + binint(1) + b"\x87R"
        + b"(" + binint(3) + binstring(b"|") + b"NNN" + binint(-1) + binint(-1) + binint(0) + b"tb"
        + b"\x89" + binstring(data.tobytes()) + b"tb"
    )
    label_list = b"](" + b"".join(binint(v) for v in labels) + b"e"
    return (b"\x80\x02}(" + binstring(b"batch_label") + binstring(b"training batch 1 of 5")
            + binstring(b"data") + array + binstring(b"labels") + label_list + b"u.")


def test_load_cifar_reads_python2_pickles_as_the_real_files_are(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = []
    for i, file in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        data, labels = _pixels((2 + i, 3072), 30 + i), [(i + j) % 10 for j in range(2 + i)]
        (folder / file).write_bytes(_py2_pickle(data, labels))
        batches.append({b"data": data, b"labels": labels})
    assert set(safe_unpickle(folder / "test_batch")) == {b"batch_label", b"data", b"labels"}
    _check_cifar(load_cifar(tmp_path), batches[:5], batches[5:], b"labels")


def test_load_cifar_missing_files_named_with_folder(tmp_path):
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_cifar(tmp_path, "cifar10")
    assert "data_batch_3 not found" in str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"train, test not found.*cifar-100-python"):
        load_cifar(tmp_path, "cifar100")


def test_load_cifar_rejects_bad_name_and_label(tmp_path):
    with pytest.raises(ValueError, match="cifar10, cifar100.*'cifar5'"):
        load_cifar(tmp_path, "cifar5")
    with pytest.raises(ValueError, match="label for cifar10 must be one of fine, got 'coarse'"):
        load_cifar(tmp_path, "cifar10", label="coarse")


class _RunsShell:
    """Unpickling this would run a shell command (os.system) that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("nested", [False, True])
def test_malicious_pickle_is_refused_without_executing(tmp_path, nested):
    marker = tmp_path / "pwned"
    payload = _RunsShell(marker)
    _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch = _cifar_batch(3, 0, {b"labels": 10}) if nested else None
    if nested:
        batch[b"labels"] = [payload]
    with open(path, "wb") as f:
        pickle.dump(batch if nested else payload, f)
    assert b"system" in path.read_bytes()
    with pytest.raises(ValueError, match=r"data_batch_2.*(posix|os)\.system, which is not allowed"):
        load_cifar(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(V1+1\ntR.",  # builtins.eval: not in the allow-list even though builtins is
        b"c_codecs\nencode\n(Vx\nVzlib\ntR.",  # _codecs.encode with any codec but latin1
    ],
)
def test_restricted_unpickler_refuses_other_callables(tmp_path, payload):
    path = _write(tmp_path / "evil", payload)
    with pytest.raises(ValueError, match=r"evil.*not allowed|evil.*latin1"):
        safe_unpickle(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b.update({b"labels": b[b"labels"][:-1]}), r"3 labels for 4 images"),
        (lambda b: b.update({b"labels": [0, 1, 10, 2]}), r"'labels' must be in \[0, 10\), got range \[0, 10\]"),
        (lambda b: b.update({b"labels": [0, -1, 1, 2]}), r"got range \[-1, 2\]"),
        (lambda b: b.update({b"data": b[b"data"][:, :3000]}), r"'data' must be uint8 of shape \(n, 3072\)"),
        (lambda b: b.update({b"data": b[b"data"].astype(np.float32)}), r"float32"),
        (lambda b: b.pop(b"labels"), r"no field 'labels'"),
    ],
)
def test_load_cifar_rejects_malformed_batches_naming_file_and_field(tmp_path, change, message):
    _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch = _cifar_batch(4, 0, {b"labels": 10})
    change(batch)
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(ValueError, match="test_batch.*" + message):
        load_cifar(tmp_path)


def test_load_cifar_accepts_str_keys(tmp_path):
    batches = _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({k.decode(): v for k, v in batches[5].items()}, f)
    _check_cifar(load_cifar(tmp_path), batches[:5], batches[5:], b"labels")


@pytest.mark.parametrize("content", [b"not a pickle at all", b"", pickle.dumps({b"data": 1})[:-3]])
def test_corrupted_pickle_is_a_value_error_naming_the_file(tmp_path, content):
    path = _write(tmp_path / "data_batch_1", content)
    with pytest.raises(ValueError, match="data_batch_1"):
        safe_unpickle(path)


# ----------------------------------------------------------------------------------------------------------
# Image folder
# ----------------------------------------------------------------------------------------------------------


def _write_npy_folder(root: Path, split: str = "test") -> dict[str, list[np.ndarray]]:
    """Classes written out of order; images of mixed channel layouts, all 5x6."""
    images = {
        ("train", "zebra"): [_pixels((5, 6, 3), 1), _pixels((5, 6), 2)],
        ("train", "ant"): [_pixels((5, 6, 4), 3), _pixels((5, 6, 1), 4), _pixels((5, 6, 3), 5)],
        (split, "ant"): [_pixels((5, 6, 3), 6)],
        (split, "zebra"): [_pixels((5, 6, 3), 7), _pixels((5, 6, 3), 8)],
    }
    for (s, cls), arrays in images.items():
        (root / s / cls).mkdir(parents=True)
        for i, array in enumerate(arrays):
            np.save(root / s / cls / f"{9 - i}.npy", array)  # names 9, 8, 7: sorted order is reversed
        (root / s / cls / "notes.txt").write_text("not an image")
        (root / s / cls / ".hidden.npy").write_bytes(b"junk")
    return images


def _rgb(array: np.ndarray) -> np.ndarray:
    array = array[:, :, None] if array.ndim == 2 else array
    array = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[:, :, :3]
    return array.transpose(2, 0, 1)


@pytest.mark.parametrize("split", ["test", "val"])
def test_image_folder_reads_npy_sorted_byte_exact(tmp_path, split):
    images = _write_npy_folder(tmp_path, split)
    train_x, train_y, test_x, test_y, classes = load_image_folder(tmp_path)
    assert classes == ("ant", "zebra")
    assert train_x.dtype == torch.uint8 and train_x.shape == (5, 3, 5, 6)
    assert train_y.tolist() == [0, 0, 0, 1, 1] and test_y.tolist() == [0, 1, 1]
    expected_train = [a for cls in classes for a in reversed(images[("train", cls)])]
    expected_test = [a for cls in classes for a in reversed(images[(split, cls)])]
    assert train_x.numpy().tobytes() == np.stack([_rgb(a) for a in expected_train]).tobytes()
    assert test_x.numpy().tobytes() == np.stack([_rgb(a) for a in expected_test]).tobytes()


def test_image_folder_resizes_to_size(tmp_path):
    _write_npy_folder(tmp_path)
    flat = np.full((9, 4, 3), 77, np.uint8)
    np.save(tmp_path / "train" / "ant" / "0.npy", flat)  # a different size: fine once resized
    out = load_image_folder(tmp_path, size=8)
    assert out.train_x.shape == (6, 3, 8, 8) and out.test_x.shape == (3, 3, 8, 8)
    assert bool((out.train_x[0] == 77).all())  # a constant image stays constant
    assert torch.equal(load_image_folder(tmp_path, size=8).train_x, out.train_x)


def test_image_folder_differing_sizes_need_size(tmp_path):
    _write_npy_folder(tmp_path)
    np.save(tmp_path / "train" / "zebra" / "0.npy", np.zeros((7, 6, 3), np.uint8))
    with pytest.raises(ValueError, match=r"0\.npy.*\(7, 6\).*pass size="):
        load_image_folder(tmp_path)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        load_image_folder(tmp_path)
    _write_npy_folder(tmp_path)
    (tmp_path / "test" / "moth").mkdir()
    with pytest.raises(ValueError, match="absent from training: moth"):
        load_image_folder(tmp_path)
    (tmp_path / "test" / "moth").rmdir()
    np.save(tmp_path / "train" / "ant" / "0.npy", np.zeros((5, 6, 3), np.float32))
    with pytest.raises(ValueError, match=r"0\.npy.*must be uint8, got float32"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="size must be a positive int"):
        load_image_folder(tmp_path, size=0)


def test_image_folder_without_pillow_names_pip_install(tmp_path, monkeypatch):
    _write_npy_folder(tmp_path)
    (tmp_path / "train" / "ant" / "00.png").write_bytes(b"\x89PNG not really")
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `import PIL` raise ImportError
    with pytest.raises(ImportError) as info:
        load_image_folder(tmp_path)
    assert "pip install pillow" in str(info.value) and "\n" not in str(info.value)
    assert "00.png" in str(info.value)


def test_image_folder_decodes_png_with_pillow(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    images = _write_npy_folder(tmp_path)
    rgb = _pixels((5, 6, 3), 99)
    image_module.fromarray(rgb).save(tmp_path / "train" / "zebra" / "00.png")
    image_module.fromarray(rgb[:, :, 0]).save(tmp_path / "test" / "ant" / "00.png")  # greyscale
    out = load_image_folder(tmp_path)
    assert out.train_x.shape[0] == 6 and out.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert out.train_x[3].numpy().tobytes() == rgb.transpose(2, 0, 1).tobytes()
    assert out.test_x[0].numpy().tobytes() == np.repeat(rgb[:, :, :1], 3, axis=2).transpose(2, 0, 1).tobytes()
    assert len(images) == 4
