"""Reader for an image-folder data set: one folder per class, for a training and a test (or validation) split.

Layout (torchvision's ``ImageFolder``, one level up)::

    <root>/train/<class>/<file>       e.g. root/train/cat/001.png
    <root>/test/<class>/<file>        or root/val/<class>/<file> when there is no test/

Classes are the folder names under ``train/``, sorted; class ``k`` is the ``k``-th name. Files are read in sorted
order; only known extensions count (``.npy`` and the image formats in :data:`IMAGE_EXTENSIONS`), names starting
with ``.`` are skipped. ``.npy`` files hold uint8 ``(H, W)`` or ``(H, W, C)`` arrays with ``C`` in 1, 3, 4 and
are read with numpy only; other files are decoded by Pillow, an optional dependency imported only when one is
met. Every image becomes RGB (grey repeated, alpha dropped) and, with ``size``, is resized to ``size x size`` by
``torch.nn.functional.interpolate`` (bilinear, antialiased, rounded to uint8): one resize for every format.

Returned tensors: images uint8 ``(N, 3, H, W)``, labels int64 ``(N,)``.

An image is refused (one line naming the file) when its header declares more than :data:`MAX_IMAGE_PIXELS`
pixels, before it is decoded: a small compressed file cannot expand into a large allocation.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "ImageFolderData", "load_image_folder"]

MAX_IMAGE_PIXELS = 4096 * 4096
"""Most pixels an image file may declare (checked from its header, before decoding)."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
"""File extensions (lower case) decoded with Pillow; ``.npy`` is read with numpy."""

_NPY = ".npy"


class ImageFolderData(NamedTuple):
    """What :func:`load_image_folder` returns; unpacks like a tuple."""

    train_x: torch.Tensor  # (N_train, 3, H, W) uint8
    train_y: torch.Tensor  # (N_train,) int64
    test_x: torch.Tensor  # (N_test, 3, H, W) uint8
    test_y: torch.Tensor  # (N_test,) int64
    classes: tuple[str, ...]


def load_image_folder(root: str | PathLike[str], size: int | None = None) -> ImageFolderData:
    """The image folder at ``root`` (module docstring).

    Args:
        root: the folder holding ``train/`` and ``test/`` (or ``val/``).
        size: resize every image to ``size x size``; ``None`` keeps the files' size, which must then be the
            same for every image.

    Raises:
        FileNotFoundError: ``root/train`` or both ``root/test`` and ``root/val`` are missing.
        ValueError: no classes, a class folder without images, a test class unknown to training, an unreadable
            or malformed file, or differing image sizes with ``size=None``; the message names the file.
        ImportError: an image other than ``.npy`` is met and Pillow is not installed.
    """
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int or None, got {size!r}")
    root = Path(root)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise FileNotFoundError(f"image folder: training folder {str(train_dir)!r} not found; expected "
                                f"{str(root)!r} to hold train/<class>/<image> and test/<class>/<image> (or val/)")
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if test_dir is None:
        raise FileNotFoundError(f"image folder: neither {str(root / 'test')!r} nor {str(root / 'val')!r} found; "
                                "expected test/<class>/<image> (or val/<class>/<image>) next to train/")
    classes = tuple(sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise ValueError(f"image folder {str(train_dir)!r} has no class folders; expected train/<class>/<image>")
    unknown = sorted(p.name for p in test_dir.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and p.name not in classes)
    if unknown:
        raise ValueError(f"image folder {str(test_dir)!r} has classes absent from training: {', '.join(unknown)}; "
                         f"the training classes are {', '.join(classes)}")
    train_x, train_y = _read_split(train_dir, classes, size, require_all=True)
    test_x, test_y = _read_split(test_dir, classes, size, require_all=False)
    if size is None and train_x.shape[2:] != test_x.shape[2:] and test_x.shape[0] and train_x.shape[0]:
        raise ValueError(f"image folder {str(root)!r}: training images are {tuple(train_x.shape[2:])} and test "
                         f"images {tuple(test_x.shape[2:])}; pass size= to resize them all")
    return ImageFolderData(train_x, train_y, test_x, test_y, classes)


def _read_split(
    folder: Path, classes: tuple[str, ...], size: int | None, *, require_all: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue  # a test split may lack a class; training has them all by construction
        found = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in (_NPY, *IMAGE_EXTENSIONS))
        if not found and require_all:
            raise ValueError(f"image folder: class folder {str(class_dir)!r} has no images "
                             f"(extensions {_NPY}, {', '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(f"image folder {str(folder)!r} has no images "
                         f"(extensions {_NPY}, {', '.join(IMAGE_EXTENSIONS)})")
    first = _read_image(files[0], size)  # (3, H, W) uint8
    images = torch.empty((len(files), *first.shape), dtype=torch.uint8)
    images[0] = first
    for i, path in enumerate(files[1:], start=1):
        image = _read_image(path, size)
        if image.shape != first.shape:
            raise ValueError(f"image file {str(path)!r} is {tuple(image.shape[1:])} (height, width), "
                             f"{str(files[0])!r} is {tuple(first.shape[1:])}; pass size= to resize them all")
        images[i] = image
    return images, torch.tensor(labels, dtype=torch.int64)


def _read_image(path: Path, size: int | None) -> torch.Tensor:
    """One image as uint8 ``(3, H, W)`` (``(3, size, size)`` with ``size``)."""
    array = _read_npy(path) if path.suffix.lower() == _NPY else _read_with_pillow(path)  # (H, W, C) uint8
    channels = array.shape[2]
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
    elif channels == 4:
        array = array[:, :, :3]
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)  # (3, H, W)
    if size is not None and image.shape[1:] != (size, size):
        resized = torch.nn.functional.interpolate(
            image[None].to(torch.float32), size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        image = resized[0].round().clamp(0, 255).to(torch.uint8)
    return image.contiguous()


class _TooLarge(ValueError):
    """An image whose header declares more than MAX_IMAGE_PIXELS pixels."""


def _check_pixels(path: Path, height: int, width: int) -> None:
    if height * width > MAX_IMAGE_PIXELS:
        raise _TooLarge(f"image file {str(path)!r} is {height}x{width} = {height * width:,} pixels, more than the "
                         f"{MAX_IMAGE_PIXELS:,} allowed (MAX_IMAGE_PIXELS)")


def _read_npy(path: Path) -> np.ndarray:
    try:
        with path.open("rb") as fh:  # the header's shape, before any data is read
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape = read_header(fh)[0]
        if len(shape) >= 2:
            _check_pixels(path, int(shape[0]), int(shape[1]))
        array = np.load(path, allow_pickle=False)
    except _TooLarge:
        raise
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"image file {str(path)!r} is not a readable .npy array: {exc}") from exc
    if array.dtype != np.uint8:
        raise ValueError(f"image file {str(path)!r}: .npy images must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise ValueError(f"image file {str(path)!r}: .npy images must be (H, W) or (H, W, C) with C in 1, 3, 4, "
                         f"got shape {array.shape}")
    return array


def _read_with_pillow(path: Path) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError(f"reading {str(path)!r} needs Pillow, an optional dependency: pip install pillow "
                          "(or store the images as uint8 .npy arrays)") from None
    try:
        with Image.open(path) as img:  # reads the header only
            _check_pixels(path, img.height, img.width)
            return np.array(img.convert("RGB"), dtype=np.uint8)  # (H, W, 3), a writable copy
    except Image.DecompressionBombError:  # Pillow's own limit, above ours, trips at open
        raise _TooLarge(f"image file {str(path)!r} declares more pixels than the {MAX_IMAGE_PIXELS:,} allowed "
                        f"(MAX_IMAGE_PIXELS)") from None
    except _TooLarge:
        raise
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"image file {str(path)!r} cannot be decoded by Pillow: {exc}") from exc

