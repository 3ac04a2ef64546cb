"""``--model planted``: searching the Plant 'n' Seek mother network itself, to compare with the planted ticket."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from strongticket.cli import main
from strongticket.config import SearchConfig
from strongticket.data.splits import load_splits
from strongticket.evaluate import evaluate_ticket
from strongticket.models import model_from_config
from strongticket.nn import masked_layers
from strongticket.planted import plant_task
from strongticket.search import run_search

RUN = dict(model="planted", data="planted-relu", widths=(20,), epochs=2, batch_size=512, density=0.5, lr=0.1,
           device="cpu", seed=3)


def test_planted_model_holds_the_mother_network() -> None:
    cfg = SearchConfig(**RUN)
    model = model_from_config(cfg, (1,), 1)
    p = plant_task("relu", depth=3, width=20, seed=3)
    layers = masked_layers(model)
    assert len(layers) == 2
    for lay, w, b in zip(layers, p.weights, p.biases, strict=True):
        assert torch.equal(lay.weight, torch.from_numpy(w).float())
        assert torch.equal(lay.bias, torch.from_numpy(b).float())
        assert lay.bias_scores is not None and lay.density == 0.5


def test_search_eval_and_plant_masks_on_planted_network(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    summary = run_search(SearchConfig(**RUN, out=str(out)), progress=False)
    ticket = str(out / "ticket.safetensors")
    result = evaluate_ticket(ticket, device="cpu")  # rebuilds the network, checks the weights' SHA-256
    assert result["test_mse"] == summary["test_mse"] == result["run_test_mse"]
    capsys.readouterr()
    # depth, width and seed come from the ticket: the masks are compared with the edges planted from seed 3
    assert main(["plant", "--task", "relu", "--quick", "--masks", ticket]) == 0
    text = capsys.readouterr().out
    assert "(depth 3, seed 3)" in text
    assert "found layer 0: precision" in text and "found layer 1: precision" in text and "jaccard" in text
    assert main(["plant", "--quick", "--masks", ticket]) == 0  # the task comes from the ticket
    assert "planted relu ticket" in capsys.readouterr().out
    assert main(["plant", "--task", "relu", "--quick", "--json", "--masks", ticket]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["depth"], r["width"], r["seed"]) == (3, 20, 3) and r["found_on_planted_network"]
    assert [rec["layer"] for rec in r["recovery"]] == [0, 1]
    assert all(0.0 <= rec[k] <= 1.0 for rec in r["recovery"] for k in ("precision", "recall", "jaccard"))
    # the found network's metric is the ticket's own test MSE (float64 vs float32)
    assert r["found_test_metric"] == pytest.approx(summary["test_mse"], rel=1e-4)
    # other seeds / sizes than the ticket's are refused in one line
    for extra in (["--seed", "4"], ["--width", "30"], ["--depth", "5"]):
        assert main(["plant", "--task", "relu", "--masks", ticket, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "--model planted" in err and len(err.splitlines()) == 1
    assert main(["plant", "--task", "relu", "--quick", "--seed", "3", "--masks", ticket]) == 0


@pytest.mark.parametrize("changes, match", [
    (dict(data="digits"), "model planted needs data planted-"),
    (dict(widths=(20, 30)), "equal hidden widths"),
    (dict(width=2.0), "no width multiplier"),
])
def test_planted_model_errors(changes, match) -> None:
    cfg = SearchConfig(**{**RUN, **changes})
    splits = load_splits(cfg.data)
    with pytest.raises(ValueError, match=match) as e:
        model_from_config(cfg, splits.input_shape, splits.num_classes)
    assert "\n" not in str(e.value)


def test_planted_model_wrong_data_is_a_one_line_cli_error(tmp_path, capsys) -> None:
    assert main(["search", "--model", "planted", "--data", "digits", "--widths", "20", "--epochs", "1",
                 "--device", "cpu", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert "model planted needs data" in err and len(err.splitlines()) == 1


def test_plant_defaults_without_planted_ticket_are_unchanged(tmp_path) -> None:
    from strongticket.planted.cli import plant_report

    r = plant_report("relu", quick=True)
    assert (r["depth"], r["width"], r["seed"]) == (5, 100, 0)
    masks = {f"mask{i}": m for i, m in enumerate(plant_task("relu").masks)}
    np.savez(tmp_path / "m.npz", **masks)
    r = plant_report("relu", quick=True, masks_path=str(tmp_path / "m.npz"))
    assert all(rec["jaccard"] == 1.0 for rec in r["recovery"]) and not r["found_on_planted_network"]
