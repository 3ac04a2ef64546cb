"""End-to-end edge-popup search: files, frozen weights, resume bit for bit, ticket round trip."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from strongticket.config import SearchConfig
from strongticket.evaluate import evaluate_ticket, load_ticket_model
from strongticket.nn import masked_layers
from strongticket.search import run_search
from strongticket.ticket import read_ticket

SMALL = dict(widths=(48, 32), epochs=4, batch_size=128)


def _masks(folder):
    return read_ticket(folder / "ticket.safetensors").masks


def test_search_writes_run_files_and_summary(tmp_path):
    summary = run_search(SearchConfig(out=str(tmp_path), **SMALL), progress=False)
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "ticket.safetensors", "summary.json", "report.md"):
        assert (tmp_path / name).is_file(), name
    for key in ("test_acc", "val_acc", "density", "layer_density", "kept_weights", "total_weights", "seconds",
                "backend", "seed"):
        assert key in summary, key
    assert summary["backend"] == "torch" and summary["seed"] == 0
    assert summary["total_weights"] == 64 * 48 + 48 * 32 + 32 * 10
    assert summary["kept_weights"] == sum(-(-n // 2) for n in (64 * 48, 48 * 32, 32 * 10))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert all(0 <= r["flip_rate"] <= 1 for r in lines) and lines[0]["flip_rate"] > 0
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_search_never_changes_the_frozen_weights(tmp_path):
    cfg = SearchConfig(out=str(tmp_path), **SMALL)
    run_search(cfg, progress=False)
    model, ticket, _ = load_ticket_model(tmp_path / "ticket.safetensors", device="cpu")
    fresh = SearchConfig(out=str(tmp_path / "fresh"), **SMALL)
    from strongticket.data.splits import load_splits
    from strongticket.models import model_from_config

    splits = load_splits("digits")
    untouched = model_from_config(fresh, splits.input_shape, splits.num_classes)
    for a, b in zip(masked_layers(model), masked_layers(untouched)):
        assert torch.equal(a.weight, b.weight)
    assert ticket.weights_sha256 == json.loads((tmp_path / "summary.json").read_text())["weights_sha256"]


def test_interrupted_search_resumes_to_the_same_mask_bit_for_bit(tmp_path):
    straight = tmp_path / "straight"
    run_search(SearchConfig(out=str(straight), **SMALL), progress=False)

    resumed = tmp_path / "resumed"
    cfg = SearchConfig(out=str(resumed), **SMALL)

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, on_epoch=stop_after_two, progress=False)
    assert not (resumed / "ticket.safetensors").exists()
    run_search(cfg, progress=False)
    for a, b in zip(_masks(straight), _masks(resumed)):
        assert torch.equal(a, b)
    lines = (resumed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["trainable"]
    b = torch.load(resumed / "checkpoint.pt", weights_only=True)["trainable"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finished_run_is_reported_again_without_recomputation(tmp_path):
    cfg = SearchConfig(out=str(tmp_path), **SMALL)
    first = run_search(cfg, progress=False)
    mtime = (tmp_path / "ticket.safetensors").stat().st_mtime_ns
    assert run_search(cfg, progress=False) == first
    assert (tmp_path / "ticket.safetensors").stat().st_mtime_ns == mtime


def test_out_folder_of_another_config_is_refused(tmp_path):
    run_search(SearchConfig(out=str(tmp_path), **SMALL), progress=False)
    with pytest.raises(ValueError, match="holds a run of another config"):
        run_search(SearchConfig(out=str(tmp_path), **{**SMALL, "density": 0.3}), progress=False)


def test_global_scope_search_keeps_ceil_density_overall(tmp_path):
    summary = run_search(SearchConfig(out=str(tmp_path), scope="global", density=0.1, **SMALL), progress=False)
    total = summary["total_weights"]
    assert summary["kept_weights"] == -(-total // 10)
    assert len(set(round(d, 6) for d in summary["layer_density"])) > 1


def _dense_checkpoint_bytes(folder, tmp_path):
    """Size of a torch.save of the fp32 weights and scores: what the original edge-popup code stores."""
    model, _, _ = load_ticket_model(folder / "ticket.safetensors", device="cpu")
    dense = tmp_path / "dense.pt"
    torch.save({f"{i}.{k}": t for i, layer in enumerate(masked_layers(model))
                for k, t in (("weight", layer.weight.detach()), ("scores", layer.scores.detach()))}, dense)
    return dense.stat().st_size


def test_eval_reproduces_the_run_test_accuracy(tmp_path):
    summary = run_search(SearchConfig(out=str(tmp_path), **SMALL), progress=False)
    result = evaluate_ticket(tmp_path / "ticket.safetensors", device="cpu")
    assert result["test_acc"] == summary["test_acc"]
    assert result["kept_weights"] == summary["kept_weights"]
    assert result["run_test_acc"] == summary["test_acc"]


@pytest.mark.slow
def test_default_search_reaches_95_percent_on_digits(tmp_path):
    summary = run_search(SearchConfig(out=str(tmp_path)), progress=False)
    assert summary["test_acc"] >= 0.95
    assert evaluate_ticket(tmp_path / "ticket.safetensors", device="cpu")["test_acc"] == summary["test_acc"]
    assert (tmp_path / "ticket.safetensors").stat().st_size * 20 <= _dense_checkpoint_bytes(tmp_path, tmp_path)


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_mask(tmp_path):
    args = ["--widths", "96,64", "--epochs", "8", "--batch-size", "32", "--device", "cpu"]
    run_search(SearchConfig(out=str(tmp_path / "straight"), widths=(96, 64), epochs=8, batch_size=32), progress=False)
    cmd = [sys.executable, "-m", "strongticket", "search", "--out", str(tmp_path / "killed"), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "ticket.safetensors").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "(resuming)" in done.stdout
    for a, b in zip(_masks(tmp_path / "straight"), _masks(tmp_path / "killed")):
        assert torch.equal(a, b)
