"""The 8x8 handwritten digits data set (UCI "Optical Recognition of Handwritten Digits"), bundled.

The 1,797 images ship inside the package as ``strongticket/data/digits.npz`` (see ``DIGITS.md`` in
the same folder for source, citation and licence: CC BY 4.0), so they are available right after
install with no download. The file is read through :mod:`importlib.resources`, which works from a
wheel, a zip import and an editable install alike, and its sha256 is checked before it is parsed.

Example::

    from strongticket.data import load_digits

    images, labels = load_digits()  # (1797, 1, 8, 8) float32 in [0, 1], (1797,) int64
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from importlib import resources
from os import PathLike

import numpy as np
import torch

__all__ = ["INPUT_SHAPE", "NUM_CLASSES", "NUM_IMAGES", "load_digits"]

NUM_CLASSES = 10
"""Number of classes (digits 0-9)."""

INPUT_SHAPE = (1, 8, 8)
"""Shape of one image as returned by :func:`load_digits` (channels, height, width)."""

NUM_IMAGES = 1797
"""Number of images in the bundled set."""

_PACKAGE = "strongticket.data"
_FILENAME = "digits.npz"
_SHA256 = "aa64e930663d6e9271e1566601d65e70236553f73ec6cb041a4ab37167cf1d04"
_MAX_PIXEL = 16  # pixels are counts of "on" pixels in 4x4 blocks: integers 0..16


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Load the bundled 8x8 digits, in the original order of the UCI/scikit-learn file.

    Returns:
        ``(images, labels)``: ``images`` is float32 of shape ``(1797, 1, 8, 8)`` with values in
        ``[0, 1]`` (the raw 0..16 counts divided by 16); ``labels`` is int64 of shape ``(1797,)``
        with values 0..9.

    Raises:
        FileNotFoundError: the packaged ``digits.npz`` is missing (a broken install).
        ValueError: the file's sha256 does not match the pinned value, or its contents are malformed.
    """
    resource = resources.files(_PACKAGE).joinpath(_FILENAME)
    try:
        data = resource.read_bytes()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise FileNotFoundError(
            f"bundled data file {_FILENAME!r} not found in package {_PACKAGE!r} ({resource}); "
            "the installation is incomplete: reinstall strongticket (package data *.npz must be included)"
        ) from exc
    return _decode(data, source=str(resource), expected_sha256=_SHA256)


def _load_digits_from(
    path: str | PathLike[str], expected_sha256: str | None = _SHA256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load digits from an explicit ``.npz`` path (for tests and tooling); same checks as :func:`load_digits`.

    ``expected_sha256=None`` skips the checksum (the contents are still validated).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"digits data file not found: {str(path)!r}") from exc
    return _decode(data, source=str(path), expected_sha256=expected_sha256)


def _decode(data: bytes, source: str, expected_sha256: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the sha256 of ``data``, parse it as the digits ``.npz`` and convert to tensors."""
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise ValueError(
                f"digits data file {source!r} failed its integrity check: sha256 is {actual}, "
                f"expected {expected_sha256}; the file is corrupted or was altered, reinstall strongticket"
            )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("images", "labels") if key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"digits data file {source!r} is not a readable .npz archive: {exc}") from exc

    for key in ("images", "labels"):
        if key not in arrays:
            raise ValueError(f"digits data file {source!r} has no field {key!r}")
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.shape != (NUM_IMAGES, 8, 8):
        raise ValueError(
            f"digits data file {source!r}: field 'images' must be uint8 of shape ({NUM_IMAGES}, 8, 8), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.shape != (NUM_IMAGES,):
        raise ValueError(
            f"digits data file {source!r}: field 'labels' must be uint8 of shape ({NUM_IMAGES},), "
            f"got {labels.dtype} {labels.shape}"
        )
    if images.max() > _MAX_PIXEL:
        raise ValueError(f"digits data file {source!r}: field 'images' has values above {_MAX_PIXEL}")
    if labels.max() >= NUM_CLASSES:
        raise ValueError(f"digits data file {source!r}: field 'labels' has values >= {NUM_CLASSES}")

    x = torch.from_numpy(images.astype(np.float32) / _MAX_PIXEL).reshape(NUM_IMAGES, *INPUT_SHAPE)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y
