"""Data-parallel search under torchrun: sharding, loss scaling, rank agreement, resume, timeouts (gloo on CPU)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from strongticket import distributed
from strongticket.data.splits import Split, batches
from strongticket.nn import MaskedLinear
from strongticket.search.loop import _loss
from strongticket.ticket import read_ticket

SEARCH = ["--widths", "128", "--epochs", "6", "--batch-size", "16", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def _images(n=25):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 6, 6), dtype=torch.uint8, generator=g)
    return Split(x, torch.arange(n) % 10, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), crop_padding=2)


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shares_of_each_batch_are_the_single_process_batch_augmented_alike(world):
    split = _images()
    single = list(batches(split, 10, seed=7, epoch=3, augment=True))
    shares = [list(batches(split, 10, seed=7, epoch=3, augment=True, rank=r, world_size=world)) for r in range(world)]
    assert all(len(s) == len(single) for s in shares)
    for step, whole in enumerate(single):
        for r in range(world):
            assert torch.equal(shares[r][step].x, whole.x[r::world])
            assert torch.equal(shares[r][step].labels, whole.labels[r::world])


def test_batches_reject_a_rank_outside_the_world():
    with pytest.raises(ValueError, match=r"rank must be an integer in \[0, 1\], got 2"):
        next(batches(_images(), 10, rank=2, world_size=2))
    with pytest.raises(ValueError, match="world_size must be a positive integer, got 0"):
        next(batches(_images(), 10, world_size=0))


@pytest.mark.parametrize("world, batch", [(2, 16), (3, 16), (4, 3)])
def test_rank_losses_averaged_by_ddp_give_the_global_batch_gradient(world, batch):
    layer = MaskedLinear(12, 10, seed=3)
    g = torch.Generator().manual_seed(1)
    x, labels = torch.randn(batch, 12, generator=g), torch.randint(0, 10, (batch,), generator=g)
    F.cross_entropy(layer(x), labels).backward()
    expected, layer.scores.grad = layer.scores.grad.clone(), None
    grads = []
    for r in range(world):  # (4, 3): rank 3 holds no example, as on a short last batch
        loss, _ = _loss(layer(x[r::world]), labels[r::world], world, batch)
        loss.backward()
        grads.append(layer.scores.grad.clone())
        layer.scores.grad = None
    torch.testing.assert_close(sum(grads) / world, expected, rtol=1e-5, atol=1e-7)


def test_one_process_loss_is_the_plain_batch_mean():
    logits, labels = torch.randn(8, 10), torch.arange(8)
    loss, loss_sum = _loss(logits, labels, 1, 8)
    assert torch.equal(loss, F.cross_entropy(logits, labels))
    assert loss_sum == float(F.cross_entropy(logits, labels)) * 8


def test_dist_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("STRONGTICKET_DIST_TIMEOUT", raising=False)
    assert distributed.timeout_seconds() == distributed.DEFAULT_TIMEOUT_S
    monkeypatch.setenv("STRONGTICKET_DIST_TIMEOUT", "12.5")
    assert distributed.timeout_seconds() == 12.5
    for bad in ("0", "-3", "soon", "nan"):
        monkeypatch.setenv("STRONGTICKET_DIST_TIMEOUT", bad)
        with pytest.raises(ValueError, match=rf"DIST_TIMEOUT must be seconds in \(0, 604800\], got '{bad}'"):
            distributed.timeout_seconds()


def test_outside_torchrun_everything_is_one_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not distributed.launched_by_torchrun()
    assert distributed.init_from_env(torch.device("cpu")) == torch.device("cpu")
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, torch.device("cpu")) is model
    assert distributed.on_main(lambda: 41) == 41
    assert distributed.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    distributed.check_agreement({"masks": "00" * 32}, "now")


def test_mask_digest_sees_shape_and_every_bit():
    a = torch.zeros(4, 4, dtype=torch.bool)
    b = a.clone()
    b[3, 3] = True
    digests = {distributed.tensors_sha256([m]) for m in (a, b, a.reshape(2, 8))}
    assert len(digests) == 3
    assert distributed.tensors_sha256([a, None]) != distributed.tensors_sha256([a])


# --- end to end: torchrun with gloo on CPU ---------------------------------------------------------------------------


def _start(folder, nproc=None, **popen):
    """``strongticket search`` of SEARCH into ``folder``: plain, or under torchrun with ``nproc`` processes."""
    cmd = [*(TORCHRUN + [f"--nproc_per_node={nproc}"] if nproc else [sys.executable]), "-m", "strongticket",
           "search", "--out", str(folder), *SEARCH]
    return subprocess.Popen(cmd, env=ENV, **(popen or dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))


def _finish(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    return out


def _masks(folder):
    return read_ticket(folder / "ticket.safetensors").masks


def _metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    procs = {name: _start(root / name, nproc) for name, nproc in (("plain", None), ("one", 1), ("two", 2))}
    return root, {name: _finish(proc) for name, proc in procs.items()}


@pytest.mark.slow
def test_two_gloo_ranks_agree_every_epoch_and_match_one_process(runs):
    root, out = runs
    two, plain = root / "two", root / "plain"
    assert out["two"].count("ticket: ") == 1 and "2 processes" in out["two"]  # rank 0 alone speaks
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in plain.iterdir())  # no stray files
    records = _metrics(two)
    assert [r["epoch"] for r in records] == list(range(1, 7))  # each epoch logged once, ranks agreed on each
    assert all(len(r["mask_sha256"]) == 64 for r in records)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["world_size"] == 2
    same = sum(int((a == b).sum()) for a, b in zip(_masks(two), _masks(plain)))
    assert same / sum(m.numel() for m in _masks(plain)) >= 0.99
    assert abs(summary["test_acc"] - json.loads((plain / "summary.json").read_text())["test_acc"]) <= 0.01


@pytest.mark.slow
def test_one_process_torchrun_equals_the_plain_run_bit_for_bit(runs):
    root, _ = runs
    for a, b in zip(_masks(root / "one"), _masks(root / "plain")):
        assert torch.equal(a, b)
    assert [r["mask_sha256"] for r in _metrics(root / "one")] == [r["mask_sha256"] for r in _metrics(root / "plain")]
    assert json.loads((root / "one" / "summary.json").read_text())["world_size"] == 1


@pytest.mark.slow
def test_killed_ddp_run_resumes_to_the_same_masks(runs):
    root, _ = runs
    killed = root / "killed"
    proc = _start(killed, 2, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics, deadline = killed / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            os.killpg(proc.pid, signal.SIGKILL)  # the agent and both ranks
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "ticket.safetensors").exists()
    assert "(resuming)" in _finish(_start(killed, 2))
    for a, b in zip(_masks(root / "two"), _masks(killed)):
        assert torch.equal(a, b)
    assert [r["mask_sha256"] for r in _metrics(killed)] == [r["mask_sha256"] for r in _metrics(root / "two")]


_COLLECTIVES = """
import sys
import torch
from strongticket import distributed

def say(line):  # one write per line: print() writes the text and its newline apart, and both ranks share the pipe
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()

distributed.init_from_env(torch.device("cpu"))
r = distributed.rank()
assert distributed.all_reduce_sum([r, 1]) == [1.0, 2.0]
assert distributed.on_main(lambda: f"from {distributed.rank()}") == "from 0"
distributed.check_agreement({"masks": "ab" * 32, "scores": "cd" * 32}, "in step 1")
try:
    distributed.check_agreement({"masks": "ab" * 32, "scores": f"{r:02x}" * 32}, "in step 2")
except RuntimeError as e:
    say(f"rank {r}: {e}")
try:
    distributed.on_main(lambda: int("x"))
except ValueError as e:
    say(f"rank {r}: {e}")
distributed.shutdown()
"""


@pytest.mark.slow
def test_ranks_that_disagree_all_raise_and_rank_0_errors_reach_every_rank(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(_COLLECTIVES)
    done = subprocess.run([*TORCHRUN, "--nproc_per_node=2", str(script)], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for r in (0, 1):
        assert f"rank {r}: ranks hold different scores in step 2" in done.stdout
    assert "rank 0: invalid literal for int() with base 10: 'x'\n" in done.stdout
    assert "rank 1: invalid literal for int() with base 10: 'x' (raised on rank 0)" in done.stdout


_HANGING_RANK = """
import sys, time, torch
from strongticket import distributed
distributed.init_from_env(torch.device("cpu"))
if distributed.rank() == 1:
    time.sleep(120)  # hangs: never joins the collective
distributed.all_reduce_sum([1.0])
"""


@pytest.mark.slow
def test_a_hanging_rank_makes_the_others_fail_after_the_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ENV, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "STRONGTICKET_DIST_TIMEOUT": "3"}
    procs = [subprocess.Popen([sys.executable, "-c", _HANGING_RANK], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        start = time.time()
        _, err = procs[0].communicate(timeout=90)
        assert procs[0].returncode != 0 and time.time() - start < 60
        assert "timed out" in err.lower() or "timeout" in err.lower(), err[-2000:]
    finally:
        procs[1].kill()
        procs[1].wait()
