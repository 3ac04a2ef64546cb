"""Sanity checks on tickets, several seeds, and the report drawn from run logs."""

import json

import pytest

from strongticket.cli import main
from strongticket.config import SearchConfig
from strongticket.evaluate import evaluate_ticket
from strongticket.report import mean_std, write_report
from strongticket.search import run_search


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    summary = run_search(SearchConfig(out=str(folder), widths=(128, 64), epochs=8, save_scores=True),
                         progress=False)
    assert summary["test_acc"] > 0.85
    return folder / "ticket.safetensors", summary


@pytest.mark.parametrize("check", ["shuffle", "reinit", "invert"])
def test_each_sanity_check_lowers_accuracy(trained, check):
    ticket, summary = trained
    result = evaluate_ticket(ticket, device="cpu", sanity=check)
    assert result["sanity"] == check
    assert result["kept_weights"] == summary["kept_weights"]  # same number of weights, wrong ones
    assert result["test_acc"] < summary["test_acc"] - 0.2


def test_invert_needs_saved_scores(tmp_path):
    run_search(SearchConfig(out=str(tmp_path), widths=(16,), epochs=1), progress=False)
    with pytest.raises(ValueError, match="sanity check invert needs the scores: .* was saved without --save-scores"):
        evaluate_ticket(tmp_path / "ticket.safetensors", device="cpu", sanity="invert")


def test_several_seeds_report_mean_and_std(tmp_path, capsys):
    code = main(["search", "--widths", "16", "--epochs", "1", "--seeds", "0,1,2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    accs = [json.loads((tmp_path / f"seed-{s}" / "summary.json").read_text())["test_acc"] for s in (0, 1, 2)]
    mean, std = mean_std(accs)
    assert f"over 3 seeds: test acc {mean:.4f} ± {std:.4f}" in out
    assert len(set(accs)) > 1
    code = main(["search", "--seed", "1", "--seeds", "0,1"])
    assert code == 2 and "give either --seed or --seeds, not both" in capsys.readouterr().err


def test_report_writes_a_table_over_runs_and_seeds(tmp_path, capsys):
    assert main(["search", "--widths", "16", "--epochs", "2", "--seeds", "0,1", "--out", str(tmp_path / "r")]) == 0
    path = write_report([tmp_path / "r" / "seed-0", tmp_path / "r" / "seed-1"], tmp_path / "rep")
    text = path.read_text()
    assert text.count("| seed-") == 2 and "Over seeds (mean ± sample std)" in text and "| 0,1 |" in text
    pytest.importorskip("matplotlib")
    assert (tmp_path / "rep" / "accuracy.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "layer_density.png").stat().st_size > 1000


def test_report_of_an_unfinished_folder_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("strongticket: error: run folder") and "missing config.json" in err
