"""Readers for the IDX format and for MNIST / Fashion-MNIST as torchvision lays them out on disk. No download.

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic ``0x00 0x00 <dtype code> <ndim>``, then
``ndim`` big-endian uint32 sizes, then the values, big-endian, row-major. Dtype codes: ``0x08`` uint8,
``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64. A file may be gzipped
(recognised by its gzip magic ``1f 8b``, whatever its name).

Layout read by :func:`load_mnist` (``name`` is ``"MNIST"`` or ``"FashionMNIST"``, torchvision's folder names)::

    <root>/<name>/raw/train-images-idx3-ubyte   (N, 28, 28) uint8, magic 0x00000803
    <root>/<name>/raw/train-labels-idx1-ubyte   (N,) uint8 in 0..9, magic 0x00000801
    <root>/<name>/raw/t10k-images-idx3-ubyte
    <root>/<name>/raw/t10k-labels-idx1-ubyte

each optionally with a ``.gz`` suffix. Returned tensors: images uint8 ``(N, 1, 28, 28)``, labels int64 ``(N,)``.
"""

from __future__ import annotations

import gzip
import math
import zlib
from os import PathLike
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

__all__ = ["IDX_DTYPES", "MAX_IDX_BYTES", "MNIST_FILES", "MNIST_NAMES", "find_idx_file", "load_mnist", "read_idx"]

MAX_IDX_BYTES = 64 << 20
"""Largest data size an IDX file may declare (MNIST's training images: 47 MB), checked before any data is read: a
300 KB .gz at the limit for both splits makes a search peak at about 570 MB."""

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX dtype code -> big-endian numpy dtype."""

MNIST_NAMES = ("MNIST", "FashionMNIST")
"""Folder names accepted by :func:`load_mnist` (torchvision's class names)."""

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The four files :func:`load_mnist` reads from ``<root>/<name>/raw/`` (each may end in ``.gz``)."""

_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_MAGIC = 0x00000803  # uint8, 3 dims
_LABEL_MAGIC = 0x00000801  # uint8, 1 dim
_IMAGE_SIZE = 28
_NUM_CLASSES = 10


def read_idx(path: str | PathLike[str], max_bytes: int | None = None) -> np.ndarray:
    """The array stored in IDX file ``path`` (plain or gzipped), in native byte order.

    The header is read first and the data size it implies (an exact integer) checked against the file and against
    ``max_bytes`` (default :data:`MAX_IDX_BYTES`) before the data is read; a gzipped file is decompressed as a
    stream and never past that size, so a small file cannot expand into a large allocation.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: bad magic, unknown dtype code, a data size that does not match the header or exceeds
            ``max_bytes``; the message names the file and what is wrong.
    """
    path = Path(path)
    limit = MAX_IDX_BYTES if max_bytes is None else max_bytes
    try:
        with path.open("rb") as raw_fh:
            gz = raw_fh.read(2) == _GZIP_MAGIC
            raw_fh.seek(0)
            fh = gzip.GzipFile(fileobj=raw_fh) if gz else raw_fh
            try:
                return _read_idx_stream(path, fh, None if gz else path.stat().st_size, limit)
            except (OSError, EOFError, zlib.error) as exc:
                if not gz:
                    raise
                raise ValueError(f"IDX file {str(path)!r} is gzip-compressed but cannot be decompressed: {exc}") \
                    from exc
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"IDX file not found: {str(path)!r}") from exc


def _read_idx_stream(path: Path, fh: BinaryIO, size: int | None, limit: int) -> np.ndarray:
    magic = fh.read(4)
    if len(magic) < 4:
        raise ValueError(f"IDX file {str(path)!r} is {len(magic)} bytes long, shorter than the 4-byte magic")
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(
            f"IDX file {str(path)!r}: magic must start with bytes 00 00, got {magic.hex(' ')} "
            "(not an IDX file, or a corrupted one)"
        )
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"IDX file {str(path)!r}: dtype code must be one of {codes}, got 0x{code:02X}")
    header = 4 + 4 * ndim
    dims = fh.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"IDX file {str(path)!r}: header of {ndim} dimensions needs {header} bytes, "
                         f"the file has {4 + len(dims)}")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if expected > limit:
        raise ValueError(f"IDX file {str(path)!r}: header says shape {shape} of {dtype.name} = {expected:,} data "
                         f"bytes, more than the {limit:,} allowed (MAX_IDX_BYTES)")
    if size is not None and size - header != expected:
        raise ValueError(
            f"IDX file {str(path)!r}: header says shape {shape} of {dtype.name} = {expected} data bytes, "
            f"the file holds {size - header} (truncated or corrupted)"
        )
    data = bytearray()
    while len(data) < expected:
        chunk = fh.read(min(expected - len(data), 1 << 24))
        if not chunk:
            break
        data += chunk
    extra = len(fh.read(1))
    if len(data) != expected or extra:
        held = f"{len(data)}" if not extra else f"more than {expected}"
        raise ValueError(
            f"IDX file {str(path)!r}: header says shape {shape} of {dtype.name} = {expected} data bytes, "
            f"the file holds {held} (truncated or corrupted)"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def find_idx_file(folder: str | PathLike[str], name: str) -> Path | None:
    """``folder/name`` if it exists, else ``folder/name.gz`` if that exists, else None."""
    for candidate in (Path(folder) / name, Path(folder) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(
    root: str | PathLike[str], name: str = "MNIST"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST or Fashion-MNIST from ``<root>/<name>/raw/`` (module docstring), without any download.

    Returns:
        ``(train_x, train_y, test_x, test_y)``: images uint8 ``(N, 1, 28, 28)``, labels int64 ``(N,)`` in 0..9,
        in file order (60,000 train and 10,000 test for the real sets; any count is accepted).

    Raises:
        ValueError: ``name`` is not one of :data:`MNIST_NAMES`, or a file is malformed (wrong magic, image size,
            label range, or image and label counts that differ); the message names the file.
        FileNotFoundError: a file is missing; the message lists the missing files and where they were expected.
    """
    if name not in MNIST_NAMES:
        raise ValueError(f"name must be one of {', '.join(MNIST_NAMES)}, got {name!r}")
    folder = Path(root) / name / "raw"
    found = {file: find_idx_file(folder, file) for file in MNIST_FILES}
    missing = [file for file, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"{name}: {', '.join(missing)} (or .gz) not found in {str(folder)!r}; expected the files "
            f"{', '.join(MNIST_FILES)} (each optionally .gz) there, as torchvision lays them out. "
            "strongticket never downloads: copy the files into that folder"
        )
    train_x, train_y = _images_and_labels(found["train-images-idx3-ubyte"], found["train-labels-idx1-ubyte"])
    test_x, test_y = _images_and_labels(found["t10k-images-idx3-ubyte"], found["t10k-labels-idx1-ubyte"])
    return train_x, train_y, test_x, test_y


def _images_and_labels(image_path: Path, label_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images = _read_checked(image_path, _IMAGE_MAGIC, "images")
    labels = _read_checked(label_path, _LABEL_MAGIC, "labels")
    if images.shape[1:] != (_IMAGE_SIZE, _IMAGE_SIZE):
        raise ValueError(
            f"IDX file {str(image_path)!r}: images must be {_IMAGE_SIZE}x{_IMAGE_SIZE}, "
            f"got {images.shape[1]}x{images.shape[2]}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"IDX file {str(image_path)!r} holds 0 images; expected at least 1")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"IDX files {str(image_path)!r} and {str(label_path)!r} must hold as many images as labels, "
            f"got {images.shape[0]} images and {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        raise ValueError(
            f"IDX file {str(label_path)!r}: labels must be in [0, {_NUM_CLASSES}), got {int(labels.max())}"
        )
    x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 28, 28) uint8
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def _read_checked(path: Path, magic: int, what: str) -> np.ndarray:
    """:func:`read_idx` plus a check of the full 4-byte magic (dtype code and number of dimensions)."""
    array = read_idx(path)
    code = next(c for c, dtype in IDX_DTYPES.items() if dtype.newbyteorder("=") == array.dtype)
    actual = (code << 8) | array.ndim
    if actual != magic:
        raise ValueError(
            f"IDX file {str(path)!r}: MNIST {what} must have magic 0x{magic:08X}, got 0x{actual:08X}"
        )
    return array
