"""Searching the planted Plant 'n' Seek tasks: data sets, the regression head with MSE, selection, eval, report."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from strongticket.cli import main
from strongticket.config import SearchConfig
from strongticket.data.splits import load_splits
from strongticket.evaluate import evaluate, evaluate_ticket
from strongticket.report import write_report
from strongticket.search import run_search
from strongticket.search.loop import _loss

TINY = dict(model="mlp", widths=(16, 16), epochs=3, batch_size=512, density=0.5, lr=0.1, device="cpu")


def _no_classification_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any cross-entropy or softmax call fail: a regression run must use neither."""
    def boom(*args, **kwargs):
        raise AssertionError("a regression run used a softmax or cross-entropy")

    for name in ("cross_entropy", "nll_loss", "softmax", "log_softmax"):
        monkeypatch.setattr(F, name, boom)
    monkeypatch.setattr(torch, "softmax", boom)
    monkeypatch.setattr(torch, "log_softmax", boom)


@pytest.mark.parametrize("name, task, d_out", [("planted-circle", "classification", 4),
                                               ("planted-relu", "regression", 1),
                                               ("planted-helix", "regression", 3)])
def test_planted_splits(name: str, task: str, d_out: int) -> None:
    s = load_splits(name)
    assert s.task == task and s.num_classes == d_out
    assert len(s.train) + len(s.val) == 9000 and len(s.test) == 1000 and len(s.val) == 900
    for split in (s.train, s.val, s.test):
        assert split.task == task and split.x.dtype == torch.float32 and split.x.shape[1:] == s.input_shape
        if task == "classification":
            assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)
        else:
            assert split.labels.dtype == torch.float32 and split.labels.shape == (len(split), d_out)
    again = load_splits(name)
    assert torch.equal(again.test.x, s.test.x) and torch.equal(again.test.labels, s.test.labels)


def test_regression_loss_is_mse() -> None:
    torch.manual_seed(0)
    out, y = torch.randn(10, 3, requires_grad=True), torch.randn(10, 3)
    loss, total = _loss(out, y, 1, 10, "regression")
    o = out.detach()
    assert torch.equal(loss, F.mse_loss(out, y)) and total == pytest.approx(float(F.mse_loss(o, y)) * 10)
    shard, shard_total = _loss(out[:5], y[:5], 2, 10, "regression")  # rank 0 of 2, global batch 10
    assert float(shard.detach()) == pytest.approx(2 / 10 * float(F.mse_loss(o[:5], y[:5], reduction="sum")) / 3)
    assert shard_total == pytest.approx(float(F.mse_loss(o[:5], y[:5])) * 5)
    with pytest.raises(ValueError, match="targets' shape"):
        _loss(out, y[:, :1], 1, 10, "regression")


def test_regression_search_logs_mse_selects_lowest_and_eval_reproduces(tmp_path, monkeypatch) -> None:
    _no_classification_losses(monkeypatch)
    cfg = SearchConfig(data="planted-relu", out=str(tmp_path / "relu"), **TINY)
    summary = run_search(cfg, progress=False)
    assert {"test_mse", "val_mse", "test_loss"} <= set(summary) and not {"test_acc", "val_acc"} & set(summary)
    records = [json.loads(line) for line in (tmp_path / "relu" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for r in records:
        assert {"train_loss", "train_mse", "val_loss", "val_mse"} <= set(r) and "val_acc" not in r
        assert r["val_mse"] == r["val_loss"] and r["train_mse"] == r["train_loss"]
    val = [r["val_mse"] for r in records]
    last_best = len(val) - val[::-1].index(min(val))  # ties go to the later epoch (evaluate.better)
    assert summary["best_epoch"] == last_best and summary["val_mse"] == min(val)
    # the selected masks, rebuilt from the ticket, give the run's test MSE bit for bit, and it is an MSE
    result = evaluate_ticket(tmp_path / "relu" / "ticket.safetensors", device="cpu")
    assert result["test_mse"] == summary["test_mse"] == result["run_test_mse"]
    from strongticket.evaluate import load_ticket_model

    model, _, _ = load_ticket_model(tmp_path / "relu" / "ticket.safetensors", device="cpu")
    test = load_splits("planted-relu").test
    with torch.no_grad():
        mse = float(F.mse_loss(model(test.x), test.labels))
    assert summary["test_mse"] == pytest.approx(mse, rel=1e-5)
    assert evaluate(model, test) == (result["test_mse"], result["test_loss"])
    assert "test mse" in (tmp_path / "relu" / "report.md").read_text()


def test_regression_train_loss_is_mse_of_the_first_step(tmp_path) -> None:
    """One step over the whole training split (batch = split): the logged train loss is F.mse_loss of the
    untrained identity head, i.e. no softmax anywhere."""
    cfg = SearchConfig(data="planted-helix", out=str(tmp_path / "helix"),
                       **{**TINY, "epochs": 1, "batch_size": 8100})
    summary = run_search(cfg, progress=False)
    record = json.loads((tmp_path / "helix" / "metrics.jsonl").read_text().splitlines()[0])
    from strongticket.models import model_from_config

    splits = load_splits("planted-helix")
    model = model_from_config(cfg, splits.input_shape, splits.num_classes)
    with torch.no_grad():
        first = F.mse_loss(model(splits.train.x), splits.train.labels)
    assert record["train_loss"] == pytest.approx(float(first), rel=1e-6)
    assert summary["test_mse"] > 0


def test_classification_search_on_planted_circle_keeps_accuracy_keys(tmp_path) -> None:
    summary = run_search(SearchConfig(data="planted-circle", out=str(tmp_path / "circle"), **TINY), progress=False)
    assert {"test_acc", "val_acc"} <= set(summary) and "test_mse" not in summary
    assert 0.0 <= summary["test_acc"] <= 1.0
    assert evaluate_ticket(tmp_path / "circle" / "ticket.safetensors", device="cpu")["test_acc"] == \
        summary["test_acc"]


def test_cross_entropy_saliency_refuses_regression(tmp_path) -> None:
    with pytest.raises(ValueError, match="needs classification data"):
        run_search(SearchConfig(data="planted-relu", algo="snip", out=str(tmp_path / "snip"), **TINY))


def test_cli_search_eval_report_on_planted_tasks(tmp_path, capsys) -> None:
    common = ["--model", "mlp", "--widths", "16,16", "--epochs", "2", "--batch-size", "512", "--device", "cpu"]
    assert main(["search", "--data", "planted-relu", "--out", str(tmp_path / "relu"), *common]) == 0
    out = capsys.readouterr().out
    assert "test mse" in out and "val mse" in out and "test acc" not in out
    assert main(["eval", str(tmp_path / "relu" / "ticket.safetensors"), "--device", "cpu"]) == 0
    assert "same as the run's" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "relu" / "ticket.safetensors"), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((tmp_path / "relu" / "summary.json").read_text())
    assert result["test_mse"] == summary["test_mse"]
    assert main(["search", "--data", "planted-circle", "--out", str(tmp_path / "circle"), *common]) == 0
    assert "test acc" in capsys.readouterr().out
    report = write_report([tmp_path / "relu", tmp_path / "circle"], tmp_path / "report").read_text()
    assert "(mse)" in report and "(acc)" in report


def test_plant_reads_ticket_masks(tmp_path, capsys) -> None:
    cfg = SearchConfig(data="planted-relu", out=str(tmp_path / "relu"), **{**TINY, "widths": (8, 8, 8), "epochs": 1})
    run_search(cfg, progress=False)
    ticket = str(tmp_path / "relu" / "ticket.safetensors")
    assert main(["plant", "--task", "relu", "--depth", "5", "--width", "8", "--quick", "--masks", ticket,
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["recovery"]) == 4 and isinstance(r["planted_path_survives"], bool)
    assert [rec["found"] for rec in r["recovery"]] == [4, 32, 32, 4]  # density 0.5 per layer
    assert main(["plant", "--task", "relu", "--depth", "4", "--width", "8", "--masks", ticket]) == 2
    assert "must have layer shapes" in capsys.readouterr().err
    assert main(["plant", "--task", "helix", "--width", "30", "--quick", "--masks", ticket]) == 2
    assert "must be searched on planted-helix" in capsys.readouterr().err
