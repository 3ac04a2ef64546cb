"""Reader for CIFAR-10 and CIFAR-100 in their "python version" pickle batches, through a restricted unpickler.

Layout (Krizhevsky, "Learning multiple layers of features from tiny images", 2009; as unpacked from the
official ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``; no download)::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch   10,000 images each
    <root>/cifar-100-python/train, test                                   50,000 and 10,000 images

Each file is a pickled dict (written by Python 2, so its keys read back as bytes: ``b"data"``) holding
``data``: uint8 ``(n, 3072)``, each row a 32x32 image as 1024 red, 1024 green, 1024 blue values, row-major;
and the labels: ``labels`` (CIFAR-10, 0..9) or ``fine_labels`` (0..99) and ``coarse_labels`` (0..19)
(CIFAR-100), lists of ints. Returned tensors: images uint8 ``(N, 3, 32, 32)``, labels int64 ``(N,)``.

Pickle can run arbitrary code, so the files are read by an unpickler that resolves only the globals a CIFAR
batch needs (numpy array and dtype reconstruction, and the plain builtins) and refuses every other one before
anything is called. The allowed callables are wrapped so that none can allocate more than the file could hold: each
call's result counts against a budget of :data:`UNPICKLE_BUDGET` times the file's size (``bytes(n)`` from an int,
or an array shape larger than its data, is refused outright), so a small file cannot ask for a large allocation.
"""

from __future__ import annotations

import importlib
import io
import math
import pickle
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CIFAR_FOLDERS", "CIFAR_LABELS", "UNPICKLE_BUDGET", "load_cifar", "safe_unpickle"]

UNPICKLE_BUDGET = 8
"""What the allowed callables may build in total, in multiples of the file's size (plus 16 MiB): a real batch's
arrays and label lists come to about 1x."""

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
"""Data set name -> folder under ``root``."""

CIFAR_LABELS = {("cifar10", "fine"): ("labels", 10), ("cifar100", "fine"): ("fine_labels", 100),
                ("cifar100", "coarse"): ("coarse_labels", 20)}
"""(name, label) -> (dict key of the labels, number of classes)."""

_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": (["train"], ["test"]),
}
_IMAGE_SHAPE = (3, 32, 32)
_ROW_BYTES = 3 * 32 * 32


class _Refused(ValueError):
    """A global outside the allow-list (or a disallowed use of one): the file is refused, never executed."""


def _numpy_global(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _reconstruct() -> Callable[..., Any]:
    try:  # numpy >= 2 moved the implementation to numpy._core; numpy.core only warns and forwards
        return _numpy_global("numpy._core.multiarray", "_reconstruct")
    except ImportError:
        return _numpy_global("numpy.core.multiarray", "_reconstruct")


def _frombuffer() -> Callable[..., Any]:
    try:
        return _numpy_global("numpy._core.numeric", "_frombuffer")
    except ImportError:
        return _numpy_global("numpy.core.numeric", "_frombuffer")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Python 3's protocol-2 pickles store bytes as ``_codecs.encode(text, "latin1")``; nothing else passes."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused(f"_codecs.encode is allowed only as encode(str, 'latin1'), got encoding {encoding!r}")
    return text.encode("latin1")


class _NdarrayType:
    """What the file gets for ``numpy.ndarray``: usable only as ``_reconstruct``'s first argument, never called
    (``ndarray(shape)`` would allocate whatever shape the file names)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused("numpy.ndarray may only be rebuilt through _reconstruct, not called")


_NDARRAY = _NdarrayType()


class _Budget:
    """Bytes the allowed callables may still build; every result is charged, an overdraft refuses the file."""

    def __init__(self, limit: int) -> None:
        self.limit, self.left = limit, limit

    def charge(self, nbytes: int) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise _Refused(f"it builds more than {self.limit:,} bytes of objects ({UNPICKLE_BUDGET}x its size + "
                           f"16 MiB): not a CIFAR batch (a decompression-style bomb?)")


def _allowed(budget: _Budget) -> dict[tuple[str, str], Callable[[], Any]]:
    """The allow-list, each callable wrapped to charge ``budget`` for what it builds. Names absent are refused."""

    def sized(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if name == "bytes" and args and not isinstance(args[0], (bytes, bytearray, str)):
                raise _Refused(f"bytes() is allowed only from bytes or str, got {type(args[0]).__name__}")
            if name in ("list", "dict") and args and not isinstance(args[0], (bytes, str, list, tuple, dict)):
                raise _Refused(f"{name}() is allowed only from a container, got {type(args[0]).__name__}")
            if args and isinstance(args[0], (bytes, str, list, tuple, dict)):
                budget.charge(len(args[0]) * (8 if name in ("list", "dict") else 1))
            return fn(*args)
        return call

    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
        if subtype is not _NDARRAY:
            raise _Refused("_reconstruct is allowed only for numpy.ndarray")
        try:
            nbytes = math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
        except (TypeError, ValueError) as exc:
            raise _Refused(f"_reconstruct got an invalid shape or dtype: {exc}") from None
        budget.charge(nbytes)
        return _reconstruct()(np.ndarray, shape, dtype)

    def frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> Any:
        budget.charge(len(memoryview(buf).cast("B")))
        return _frombuffer()(buf, dtype, shape, order)

    def dtype(*args: Any) -> Any:
        out = np.dtype(*args)
        if out.itemsize > 64 or out.hasobject:  # CIFAR holds uint8 data; object arrays would run arbitrary state
            raise _Refused(f"dtype {out} is not allowed in a CIFAR batch")
        return out

    return {
        **{(module, name): (lambda name=name: sized({"dict": dict, "list": list, "bytes": bytes, "str": str,
                                                     "int": int}[name], name))
           for module in ("builtins", "__builtin__") for name in ("dict", "list", "bytes", "str", "int")},
        ("numpy.core.multiarray", "_reconstruct"): lambda: reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): lambda: reconstruct,
        ("numpy.core.numeric", "_frombuffer"): lambda: frombuffer,  # numpy arrays under pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"): lambda: frombuffer,
        ("numpy", "ndarray"): lambda: _NDARRAY,
        ("numpy", "dtype"): lambda: dtype,
        ("_codecs", "encode"): lambda: sized(_latin1_encode, "encode"),
    }


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals come only from :func:`_allowed`; it never imports what the file names."""

    def __init__(self, file: Any, budget: _Budget) -> None:
        super().__init__(file, encoding="bytes")
        self._allowed = _allowed(budget)

    def find_class(self, module: str, name: str) -> Any:
        resolve = self._allowed.get((module, name))
        if resolve is None:
            allowed = ", ".join(sorted({f"{m}.{n}" for m, n in self._allowed}))
            raise _Refused(
                f"it refers to {module}.{name}, which is not allowed: a CIFAR batch "
                f"only needs {allowed}. The file is not a CIFAR batch and may be malicious; it was not loaded"
            )
        return resolve()

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("it uses persistent ids, which a CIFAR batch never does")


def safe_unpickle(path: str | PathLike[str]) -> Any:
    """Unpickle ``path`` (keys of Python 2 pickles come back as bytes) allowing only the globals of a CIFAR batch.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file refers to a global outside the allow-list, or is not a readable pickle; the
            message names the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()  # from memory, a length the file claims can never be read past its end
        return _RestrictedUnpickler(io.BytesIO(data), _Budget(UNPICKLE_BUDGET * len(data) + (16 << 20))).load()
    except FileNotFoundError:
        raise
    except _Refused as exc:
        raise _Refused(f"refused to unpickle {str(path)!r}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, RecursionError) as exc:
        raise ValueError(f"pickle file {str(path)!r} is corrupted or not a pickle: {type(exc).__name__}: {exc}") \
            from exc


def load_cifar(
    root: str | PathLike[str], name: str = "cifar10", label: str = "fine"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR-10 or CIFAR-100 from the pickle batches under ``root`` (module docstring), without any download.

    Args:
        root: the folder holding ``cifar-10-batches-py/`` or ``cifar-100-python/``.
        name: ``"cifar10"`` or ``"cifar100"``.
        label: ``"fine"`` (the 10 or 100 classes) or, for CIFAR-100 only, ``"coarse"`` (20 superclasses).

    Returns:
        ``(train_x, train_y, test_x, test_y)``: images uint8 ``(N, 3, 32, 32)``, labels int64 ``(N,)``, in
        file order (batches 1..5 concatenated for CIFAR-10's training set).

    Raises:
        ValueError: a bad ``name``/``label``, or a malformed or refused file (the message names the file, the
            field, and what was expected).
        FileNotFoundError: a file is missing; the message lists the missing files and where they were expected.
    """
    if name not in CIFAR_FOLDERS:
        raise ValueError(f"name must be one of {', '.join(CIFAR_FOLDERS)}, got {name!r}")
    if (name, label) not in CIFAR_LABELS:
        valid = [lab for (n, lab) in CIFAR_LABELS if n == name]
        raise ValueError(f"label for {name} must be one of {', '.join(valid)}, got {label!r}")
    key, num_classes = CIFAR_LABELS[(name, label)]
    folder = Path(root) / CIFAR_FOLDERS[name]
    train_files, test_files = _FILES[name]
    missing = [file for file in train_files + test_files if not (folder / file).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name}: {', '.join(missing)} not found in {str(folder)!r}; expected the files "
            f"{', '.join(train_files + test_files)} there (the unpacked python version of the data set). "
            "strongticket never downloads: copy the files into that folder"
        )
    train_x, train_y = _read_batches([folder / f for f in train_files], key, num_classes)
    test_x, test_y = _read_batches([folder / f for f in test_files], key, num_classes)
    return train_x, train_y, test_x, test_y


def _read_batches(paths: list[Path], key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for path in paths:
        x, y = _read_batch(path, key, num_classes)
        images.append(x)
        labels.append(y)
    x = torch.from_numpy(np.concatenate(images)).reshape(-1, *_IMAGE_SHAPE)  # (N, 3, 32, 32) uint8
    y = torch.from_numpy(np.concatenate(labels))
    return x, y


def _field(batch: dict, path: Path, key: str) -> Any:
    for k in (key.encode("ascii"), key):  # Python 2 pickles give bytes keys; files rewritten by Python 3, str
        if k in batch:
            return batch[k]
    keys = ", ".join(repr(k) for k in batch)
    raise ValueError(f"CIFAR file {str(path)!r} has no field {key!r} (keys: {keys})")


def _read_batch(path: Path, key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise ValueError(f"CIFAR file {str(path)!r} must hold a dict, got {type(batch).__name__}")
    data = _field(batch, path, "data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW_BYTES:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"CIFAR file {str(path)!r}: field 'data' must be uint8 of shape (n, {_ROW_BYTES}), "
                         f"got {desc}")
    raw_labels = _field(batch, path, key)
    try:
        labels = np.asarray(raw_labels)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"CIFAR file {str(path)!r}: field {key!r} must be a list of ints: {exc}") from exc
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"CIFAR file {str(path)!r}: field {key!r} must be a list of ints, "
                         f"got dtype {labels.dtype} shape {labels.shape}")
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"CIFAR file {str(path)!r}: field {key!r} has {labels.shape[0]} labels for "
                         f"{data.shape[0]} images")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"CIFAR file {str(path)!r}: field {key!r} must be in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return data, labels.astype(np.int64)
