"""Hostile and damaged files: no data loss, no code execution, no memory bombs, one clear line for every failure.

Every fixture is generated here (a tiny digits run, then files edited, truncated or forged from it). Each case
asserts the exit code, a one-line message without "Traceback", and that nothing on disk changed; payloads try to
create a marker file, which must never appear; the memory bombs run in a child process whose peak RSS (``VmHWM``)
must stay under 1 GB (importing torch alone costs 300-500 MB).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load, save

from strongticket.cli import main
from strongticket.config import SearchConfig
from strongticket.files import RunLock, metadata_sha256
from strongticket.search import run_search

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(widths=(16,), epochs=2, batch_size=256)
FLAGS = ["--widths", "16", "--epochs", "2", "--batch-size", "256"]
ONE_GB = 1 << 30


# ------------------------------------------------------------------------------------------------ helpers


def _cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and stderr of ``strongticket ARGV`` run in this process."""
    code = main(list(argv))
    _, err = capsys.readouterr()
    return code, err


def _one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("strongticket: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


_LAUNCH = """
import atexit, os, sys
def peak():  # VmHWM: this process's peak RSS since exec (ru_maxrss would carry the forking parent's)
    with open("/proc/self/status") as f:
        kb = next(line for line in f if line.startswith("VmHWM")).split()[1]
    with open(os.environ["PEAK_RSS_FILE"], "w") as f:
        f.write(kb)
atexit.register(peak)
from strongticket.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _child(argv: list[str], cwd: Path) -> tuple[int, str, int]:
    """``strongticket ARGV`` in a child process: (exit code, stderr, peak RSS in bytes)."""
    peak_file = cwd / "peak-rss"
    env = {**os.environ, "PYTHONPATH": str(REPO), "STRONGTICKET_DEBUG": "", "PEAK_RSS_FILE": str(peak_file)}
    proc = subprocess.run([sys.executable, "-c", _LAUNCH, *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    return proc.returncode, proc.stderr, int(peak_file.read_text()) * 1024


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def _forge(src: Path, dst: Path, edit_meta=None, edit_tensors=None, rehash: bool = True) -> Path:
    """A copy of safetensors file ``src`` with its metadata / tensors edited, its checksums recomputed (a forger
    who knows the format) unless ``rehash`` is False."""
    with safe_open(str(src), "np") as fh:
        meta = dict(fh.metadata())
    tensors = load(src.read_bytes())
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    if rehash:
        from strongticket.ticket import data_sha256

        meta["data_sha256"] = data_sha256(tensors)
        meta["header_sha256"] = metadata_sha256(meta)
    dst.write_bytes(save(tensors, metadata=meta))
    return dst


def _edit_json(key, fn):
    def edit(meta):
        meta[key] = json.dumps(fn(json.loads(meta[key])))
    return edit


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 2-epoch digits run: config.json, metrics.jsonl, checkpoint.pt, ticket, summary, report."""
    folder = tmp_path_factory.mktemp("hostile") / "run"
    run_search(SearchConfig(out=str(folder), **SMALL), progress=False)
    return folder


@pytest.fixture
def copy(run, tmp_path) -> Path:
    """A fresh copy of the finished run folder to damage."""
    dst = tmp_path / "run"
    dst.mkdir()
    for p in run.iterdir():
        if p.is_file() and p.name != ".lock":
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.fixture
def interrupted(tmp_path) -> Path:
    """A run stopped after its first of two epochs (checkpoint and one log line, no ticket)."""
    folder = tmp_path / "interrupted"

    def stop(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(SearchConfig(out=str(folder), **SMALL), on_epoch=stop, progress=False)
    return folder


# ------------------------------------------------------------------------------------------------ 1. data loss


def test_export_never_overwrites_its_ticket_or_another_file(capsys, copy):
    ticket = copy / "ticket.safetensors"
    before = _snapshot(copy)
    _one_line(*_cli(capsys, "export", str(ticket), "--format", "state_dict", "--out", str(ticket)),
              "is the ticket being exported")
    _one_line(*_cli(capsys, "export", str(ticket), "--format", "dense", "--out", str(copy / "report.md")),
              "is not a strongticket export")
    _one_line(*_cli(capsys, "export", str(ticket), "--out", str(copy)), "is a folder")
    assert _snapshot(copy) == before
    out = copy / "t.dense.pt"  # an export may be written again over itself
    assert _cli(capsys, "export", str(ticket), "--format", "dense", "--out", str(out))[0] == 0
    assert _cli(capsys, "export", str(ticket), "--format", "dense", "--out", str(out))[0] == 0


# ------------------------------------------------------------------------------------------------ 2. code execution


def test_pickle_payloads_are_never_run(capsys, copy, tmp_path):
    from strongticket.data.cifar import safe_unpickle
    from strongticket.export import ExportError, load_export

    marker = tmp_path / "PWNED"
    payload = {"format": "strongticket-dense/2", "state_dict": _Payload(marker)}
    torch.save(payload, tmp_path / "model.packed")
    with pytest.raises(ExportError, match="corrupted or unsafe file") as info:
        load_export(tmp_path / "model.packed")
    assert "\n" not in str(info.value)
    torch.save({"version": 2, "sha256": "x", "epoch": _Payload(marker)}, copy / "checkpoint.pt")
    (copy / "summary.json").unlink()
    _one_line(*_cli(capsys, "search", "--out", str(copy), *FLAGS), "checkpoint.pt: damaged checkpoint")
    (tmp_path / "batch").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(ValueError, match="refused to unpickle"):
        safe_unpickle(tmp_path / "batch")
    _one_line(*_cli(capsys, "eval", str(tmp_path / "model.packed")), "model.packed")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ 3. memory bombs


def _cifar_bomb(root: Path) -> None:
    """43 bytes of allowed names whose unpickling would allocate 4 GB: list(bytes(500_000_000))."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    bomb = (b"\x80\x02c__builtin__\nlist\nc__builtin__\nbytes\nJ\x00\x65\xcd\x1d\x85R\x85R.")
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(bomb)


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width x height RGB pixels (the data is a few bytes of zlib)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + chunk(b"IEND", b""))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS read from /proc (Linux)")
def test_memory_bombs_stay_under_1gb_in_a_child(run, tmp_path):
    """One child per bomb: a ticket, a planted ticket (plant --masks) and a theory ticket asking for huge nets,
    --widths 65536,65536, a CIFAR pickle bomb, an IDX .gz bomb and a 20000x20000 PNG."""
    big = _forge(run / "ticket.safetensors", tmp_path / "big.safetensors",
                 edit_meta=_edit_json("config", lambda c: {**c, "widths": [20000, 20000, 20000]}))
    theory = tmp_path / "theory.safetensors"
    assert main(["theory", "verify", "--construction", "pensia", "--target-widths", "2,2,1", "--draws", "1",
                 "--samples", "100", "--steps", "2", "--ticket", str(theory)]) in (0, 1)
    huge_theory = _forge(theory, tmp_path / "huge-theory.safetensors",
                         edit_meta=_edit_json("config", lambda c: {**c, "widths": [5, 10**9, 10**9, 1]}))
    cifar = tmp_path / "cifar"
    _cifar_bomb(cifar)
    mnist = tmp_path / "mnist" / "MNIST" / "raw"
    mnist.mkdir(parents=True)
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 300, 28, 28)  # 235 KB declared ...
    (mnist / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(32 << 20), 9))  # 32 MB sent
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (mnist / name).write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 0))
    images = tmp_path / "images"
    for split in ("train", "test"):
        (images / split / "cat").mkdir(parents=True)
        _png_header(images / split / "cat" / "big.png", 20000, 20000)
    planted = _forge(run / "ticket.safetensors", tmp_path / "planted.safetensors", edit_meta=_edit_json(
        "config", lambda c: {**c, "model": "planted", "data": "planted-circle", "widths": [20000, 20000, 20000]}))
    cases = [
        (["eval", str(big)], "implies"),
        (["plant", "--task", "circle", "--quick", "--masks", str(planted)], "implies"),
        (["eval", str(huge_theory)], "implies"),
        (["search", "--widths", "65536,65536", "--out", str(tmp_path / "r1")], "max_params"),
        (["search", "--data", "cifar10", "--data-root", str(cifar), "--out", str(tmp_path / "r2")], "refused"),
        (["search", "--data", "mnist", "--data-root", str(tmp_path / "mnist"), "--out", str(tmp_path / "r3")],
         "holds more than"),
        (["search", "--data", "imagefolder", "--data-root", str(images), "--out", str(tmp_path / "r4")],
         "MAX_IMAGE_PIXELS"),
    ]
    for argv, needle in cases:
        for f in (big, huge_theory):
            assert f.stat().st_size < 1 << 20
        code, err, peak = _child(argv, tmp_path)
        _one_line(code, err, needle)
        print(f"{needle}: peak RSS {peak / 2**20:.0f} MiB")  # shown with pytest -s
        assert peak < ONE_GB, (argv, peak / 2**20)


def test_size_flags_are_checked_before_anything_is_drawn(capsys, tmp_path):
    _one_line(*_cli(capsys, "theory", "verify", "--target-widths", "1048576,1", "--draws", "1"), "--max-params")
    _one_line(*_cli(capsys, "theory", "sweep", "--target-widths", "100000,1", "--out", str(tmp_path / "s")),
              "--max-params")
    _one_line(*_cli(capsys, "plant", "--task", "circle", "--width", "100000", "--quick"), "MAX_PLANTED_WEIGHTS")
    _one_line(*_cli(capsys, "search", "--model", "conv4", "--width", "64", "--out", str(tmp_path / "r")),
              "max_params")


def test_idx_header_sizes_are_exact_and_capped(tmp_path):
    from strongticket.data.idx import read_idx

    overflow = struct.pack(">BBBBIIII", 0, 0, 8, 4, 2**32 - 1, 2**32 - 1, 2**16, 2**16)  # int64 product wraps to 0
    (tmp_path / "overflow").write_bytes(overflow)
    with pytest.raises(ValueError, match="more than the .* allowed"):
        read_idx(tmp_path / "overflow")
    (tmp_path / "claim.gz").write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 10**6, 28, 28)))
    with pytest.raises(ValueError, match="MAX_IDX_BYTES"):
        read_idx(tmp_path / "claim.gz")


def test_npy_image_declaring_a_huge_shape_is_refused_before_reading(tmp_path):
    from strongticket.data.imagefolder import load_image_folder

    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 3), np.uint8))
        header["shape"] = (20000, 20000, 3)
        with open(tmp_path / split / "a" / "x.npy", "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            fh.write(b"\0" * 100)
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        load_image_folder(tmp_path)


# ------------------------------------------------------------------------------------------------ 4. checkpoints


def _flip_exponent_bit(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    scores = next(v for k, v in state["trainable"].items() if k.endswith("scores"))
    scores.view(torch.int32).view(-1)[0] ^= 1 << 27  # an exponent bit; the stored sha256 is left as it was
    torch.save(state, path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "random", "exponent-bit"])
def test_damaged_checkpoint_is_one_line_and_left_alone(capsys, interrupted, damage):
    ckpt = interrupted / "checkpoint.pt"
    raw = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "random":
        ckpt.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    else:
        _flip_exponent_bit(ckpt)
    before = _snapshot(interrupted)
    _one_line(*_cli(capsys, "search", "--out", str(interrupted), *FLAGS), "checkpoint.pt", "damaged checkpoint")
    assert _snapshot(interrupted) == before


def test_deleted_checkpoint_is_refused_not_restarted(capsys, interrupted):
    (interrupted / "checkpoint.pt").unlink()
    before = _snapshot(interrupted)
    _one_line(*_cli(capsys, "search", "--out", str(interrupted), *FLAGS), "metrics.jsonl", "checkpoint.pt is missing")
    assert _snapshot(interrupted) == before


def test_torn_log_line_is_repaired_on_resume(run, interrupted):
    log = interrupted / "metrics.jsonl"
    log.write_text(log.read_text()[:-40])  # a kill in the middle of the line's write
    run_search(SearchConfig(out=str(interrupted), **SMALL), progress=False)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    _same_ticket(interrupted, run)


def _same_ticket(a: Path, b: Path) -> None:
    """Same tensors (masks, state) and weights hash; the summary differs only in the run folder's path."""
    ta, tb = load((a / "ticket.safetensors").read_bytes()), load((b / "ticket.safetensors").read_bytes())
    assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)
    ma, mb = (dict(safe_open(str(f / "ticket.safetensors"), "np").metadata()) for f in (a, b))
    assert ma["weights_sha256"] == mb["weights_sha256"] and ma["data_sha256"] == mb["data_sha256"]


# ------------------------------------------------------------------------------------------------ 5. OS errors


def test_ordinary_os_errors_are_one_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    _one_line(*_cli(capsys, "search", "--out", str(tmp_path / "afile"), *FLAGS), "afile", "is a file")
    _one_line(*_cli(capsys, "search", "--out", str(tmp_path / "afile" / "sub"), *FLAGS), "afile")
    _one_line(*_cli(capsys, "search", "--lr", "1e300", "--out", str(tmp_path / "r"), *FLAGS), "lr must be")
    mnist = tmp_path / "m" / "MNIST" / "raw"
    mnist.mkdir(parents=True)
    for name, dims in (("train-images-idx3-ubyte", (0, 28, 28)), ("t10k-images-idx3-ubyte", (0, 28, 28)),
                       ("train-labels-idx1-ubyte", (0,)), ("t10k-labels-idx1-ubyte", (0,))):
        (mnist / name).write_bytes(struct.pack(f">BBBB{len(dims)}I", 0, 0, 8, len(dims), *dims))
    _one_line(*_cli(capsys, "search", "--data", "mnist", "--data-root", str(tmp_path / "m"), "--out",
                    str(tmp_path / "r"), *FLAGS), "holds 0 images")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("strongticket.files.os.replace", full_disk)
    _one_line(*_cli(capsys, "search", "--out", str(tmp_path / "full"), *FLAGS), "No space left on device",
              "config.json")
    assert not [p for p in (tmp_path / "full").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_read_only_out_is_one_line(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _one_line(*_cli(capsys, "search", "--out", str(ro / "run"), *FLAGS), "Permission denied")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m.update(summary='{"a": ' * 100_000 + "1" + "}" * 100_000), "not valid JSON"),
    (lambda m: m.update(config="[" * 100_000 + "]" * 100_000), "not valid JSON"),
    (lambda m: m.update(layers='{"shape": 3}'), "'layers' must be a JSON list"),
    (lambda m: m.update(layers='[{"shape": [16, -64], "kept": 1}]'), "layers[0]"),
    (lambda m: m.update(config='[1, 2]'), "'config' must be a JSON dict"),
    (lambda m: m.update(config='{"kind": ["x"]}'), "config kind"),
    (lambda m: m.update(summary='"x"'), "'summary' must be a JSON dict"),
])
def test_malformed_ticket_metadata_is_one_line(capsys, run, tmp_path, edit, needle):
    bad = _forge(run / "ticket.safetensors", tmp_path / "t.safetensors", edit_meta=edit)
    _one_line(*_cli(capsys, "eval", str(bad)), str(bad), needle)


def test_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    with pytest.raises(ValueError):
        main(["--debug", "search", "--density", "2", "--out", str(tmp_path / "r")])
    monkeypatch.setenv("STRONGTICKET_DEBUG", "1")
    with pytest.raises(ValueError):
        main(["search", "--density", "2", "--out", str(tmp_path / "r")])


# ------------------------------------------------------------------------------------------------ 6. exports


def test_edited_or_flipped_exports_are_refused(run, tmp_path):
    from strongticket.export import ExportError, export, load_export

    ticket = run / "ticket.safetensors"
    packed = export(ticket, tmp_path / "t.packed", "packed")
    negate = _edit_json("layers", lambda layers: [{**lay, "scale": -lay["scale"]} for lay in layers])
    for rehash, needle in ((False, "do not match their SHA-256"), (True, "scale")):
        bad = _forge(packed, tmp_path / f"neg{rehash}.packed", edit_meta=negate, rehash=rehash)
        with pytest.raises(ExportError, match=needle):
            load_export(bad)
    for fmt in ("dense", "prune"):
        out = export(ticket, tmp_path / f"t.{fmt}", fmt)
        blob = torch.load(out, weights_only=True)
        weight = next(v for v in blob["state_dict"].values() if v.is_floating_point() and v.abs().sum() > 0)
        weight.view(torch.int32).view(-1)[weight.view(-1).nonzero()[0]] ^= 1 << 27
        torch.save(blob, tmp_path / f"flip.{fmt}")
        with pytest.raises(ExportError, match="does not match its SHA-256"):
            load_export(tmp_path / f"flip.{fmt}")
        blob = torch.load(out, weights_only=True)
        blob["config"] = json.dumps({**json.loads(blob["config"]), "widths": [20000, 20000, 20000]})
        from strongticket.files import tree_sha256

        blob["sha256"] = tree_sha256({k: v for k, v in blob.items() if k != "sha256"})
        torch.save(blob, tmp_path / f"big.{fmt}")
        with pytest.raises(ExportError, match="implies"):
            load_export(tmp_path / f"big.{fmt}")
    bad = _forge(export(ticket, tmp_path / "t.sd", "state_dict"), tmp_path / "big.sd",
                 edit_meta=_edit_json("config", lambda c: {**c, "widths": [20000, 20000]}))
    with pytest.raises(ExportError, match="implies"):
        load_export(bad)


# ------------------------------------------------------------------------------------------------ 7. run folders


def test_a_locked_run_folder_is_refused(capsys, interrupted):
    lock = RunLock(interrupted)
    lock.acquire()
    try:
        before = _snapshot(interrupted)
        _one_line(*_cli(capsys, "search", "--out", str(interrupted), *FLAGS), "in use by another search")
        assert _snapshot(interrupted) == before
    finally:
        lock.release()


def test_finished_run_with_lost_or_damaged_files_is_rebuilt_from_its_checkpoint(run, copy):
    ticket = copy / "ticket.safetensors"
    ticket.unlink()
    with pytest.warns(RuntimeWarning, match="rebuilding the ticket"):
        run_search(SearchConfig(out=str(copy), **SMALL), progress=False)
    _same_ticket(copy, run)
    rebuilt = (copy / "summary.json").read_text()
    (copy / "summary.json").write_text(rebuilt[:20])  # torn
    with pytest.warns(RuntimeWarning, match="summary.json: damaged"):
        summary = run_search(SearchConfig(out=str(copy), **SMALL), progress=False)
    assert summary == json.loads(rebuilt) == json.loads((copy / "summary.json").read_text())
    assert not [p.name for p in copy.iterdir() if p.name.endswith(".tmp")]


def test_finished_run_whose_ticket_cannot_be_rebuilt_names_the_file(capsys, copy):
    (copy / "checkpoint.pt").unlink()
    (copy / "ticket.safetensors").write_bytes(b"garbage")
    _one_line(*_cli(capsys, "search", "--out", str(copy), *FLAGS), "ticket.safetensors", "no checkpoint.pt")


# ------------------------------------------------------------------------------------------------ 8. metadata


def test_relabelled_theory_ticket_and_edited_headers_are_refused(capsys, tmp_path):
    theory = tmp_path / "pensia.safetensors"
    assert main(["theory", "verify", "--construction", "pensia", "--target-widths", "2,2,1", "--draws", "1",
                 "--samples", "100", "--steps", "2", "--ticket", str(theory)]) in (0, 1)
    capsys.readouterr()
    relabel = _edit_json("config", lambda c: {**c, "construction": "malach"})
    bad = _forge(theory, tmp_path / "malach.safetensors", edit_meta=relabel, rehash=False)
    _one_line(*_cli(capsys, "eval", str(bad)), "do not match their SHA-256")
    old = _forge(theory, tmp_path / "old.safetensors", edit_meta=lambda m: m.update(format="strongticket-ticket/1"))
    _one_line(*_cli(capsys, "eval", str(old)), "format strongticket-ticket/1 is not readable by this version")


@pytest.mark.parametrize("text, field", [("epochs = true\n", "epochs"), ("density = true\n", "density")])
def test_true_in_a_config_file_is_not_a_number(capsys, tmp_path, text, field):
    (tmp_path / "c.toml").write_text(text)
    _one_line(*_cli(capsys, "search", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")),
              f"{field} must be")
    assert not (tmp_path / "r").exists()


def test_deep_config_file_and_damaged_report_inputs_are_one_line(capsys, copy, tmp_path):
    (tmp_path / "deep.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    _one_line(*_cli(capsys, "search", "--config", str(tmp_path / "deep.json"), "--out", str(tmp_path / "r")),
              "deep.json")
    (copy / "summary.json").write_text('{"test_acc": ')
    before = _snapshot(copy)
    _one_line(*_cli(capsys, "report", str(copy), "--out", str(tmp_path / "rep")), "summary.json", "damaged")
    assert _snapshot(copy) == before

