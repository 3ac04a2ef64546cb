"""Writing and reading the package's files safely: atomic writes, checksums, size limits, a run-folder lock.

Every file strongticket writes goes through :func:`atomic_write` (a temporary file in the same folder, fsync,
``os.replace``, fsync of the folder), so a reader sees the old file or the new one, never a torn one. Files that
are read back carry a SHA-256 the reader checks: :func:`metadata_sha256` over a safetensors header's metadata,
:func:`tree_sha256` over a ``torch.save`` payload (nested dicts / lists of tensors and plain values).
:func:`check_zip` bounds what a ``torch.save`` / ``.npz`` archive claims before anything is unpacked, and
:class:`RunLock` keeps two processes from writing one run folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["FileCheckError", "RunLock", "atomic_write", "check_zip", "metadata_sha256", "read_json", "tree_sha256"]


class FileCheckError(ValueError):
    """A file that is missing, damaged, too large or not what it claims to be; the message names it."""


def atomic_write(path: str | Path, data: bytes | str | Callable[[Path], None]) -> Path:
    """Write ``data`` (bytes, text, or a function that writes a given path) to ``path`` atomically.

    An ``OSError`` (read-only folder, full disk, a folder in the way) leaves ``path`` as it was and is raised
    with the path in its message.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible everywhere (Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def metadata_sha256(metadata: dict[str, str]) -> str:
    """SHA-256 of a safetensors header's metadata (every field but ``header_sha256`` itself), key-sorted JSON."""
    body = {k: v for k, v in metadata.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def tree_sha256(obj: Any) -> str:
    """SHA-256 of nested dicts / lists / tuples of tensors and plain values (what ``torch.save`` holds), by
    structure, type and exact value: a flipped bit anywhere in the payload changes it."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif obj is None or isinstance(obj, (bool, int, str)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"cannot hash a {type(obj).__name__} in a checked file")


def check_zip(path: Path, max_bytes: int, error: type[ValueError] = FileCheckError, noun: str = "file") -> None:
    """Refuse a zip archive (``torch.save``, ``.npz``) whose members would unpack to more than ``max_bytes``."""
    try:
        with zipfile.ZipFile(path) as z:
            total = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise error(f"{path}: corrupted {noun} (not a readable zip archive: {e})") from None
    if total > max_bytes:
        raise error(f"{path}: {noun} would unpack to {total:,} bytes, more than the {max_bytes:,} allowed "
                    f"for a file of {path.stat().st_size:,} bytes")


def read_json(path: Path, what: str, kind: type = dict) -> Any:
    """The JSON value of ``path`` (of type ``kind``), or one line naming the file and what is wrong with it."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileCheckError(f"{path}: {what} not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FileCheckError(f"{path}: damaged {what} (not valid JSON: {type(e).__name__})") from None
    if not isinstance(value, kind):
        raise FileCheckError(f"{path}: damaged {what} (expected a JSON {kind.__name__}, got {type(value).__name__})")
    return value


class RunLock:
    """An exclusive lock on a run folder (``<folder>/.lock``, ``flock``), held while a search writes it.

    A second search on the same folder is refused at once with one line; the lock goes with the process, so a
    killed run leaves nothing to clean up.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on Windows: no lock
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):  # no flock here (some network file
                os.close(fd)                                                      # systems): run unlocked
                return
            owner = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FileCheckError(f"{self.path.parent}: run folder is in use by another search (pid {owner}); "
                                 f"wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
