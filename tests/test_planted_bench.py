"""The planted-ticket benchmark (``strongticket plant --bench``): files, table, resume, n/a and skipped methods,
one-line errors. Tiny sizes: one task, edge-popup (+ snip, refused on regression), one density + planted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from strongticket.cli import main
from strongticket.data.splits import PLANTED_TASK_SEED
from strongticket.planted import bench, make_task
from strongticket.planted.plant import plant_task
from strongticket.planted.recovery import masked_task_metric
from strongticket.search import methods

TINY = ["--tasks", "relu", "--algos", "edge-popup,snip", "--densities", "0.1,planted", "--epochs", "1"]


def _count_searches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every search that gets as far as building its method (a finished run never does)."""
    built: list[str] = []
    real = methods.build

    def build(cfg):
        built.append(cfg.out)
        return real(cfg)

    monkeypatch.setattr(methods, "build", build)
    return built


def test_bench_writes_results_table_plots_and_reruns_without_searching(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    built = _count_searches(monkeypatch)
    assert main(["plant", "--bench", "--quick", *TINY]) == 0
    out = tmp_path / "runs" / "plant-bench-quick"  # the quick size's default folder
    lines = capsys.readouterr().out.splitlines()
    assert len(built) == 2  # edge-popup at 0.1 and at the planted density; snip is refused before
    assert len(lines) == 5 and lines[-1] == "wrote runs/plant-bench-quick/bench.md"
    assert [line.split()[:4] for line in lines[:4]] == [
        ["relu", "edge-popup", "d=0.1", "seed"], ["relu", "edge-popup", "d=planted", "seed"],
        ["relu", "snip", "d=0.1", "seed"], ["relu", "snip", "d=planted", "seed"]]
    assert "mse" in lines[0] and "jaccard" in lines[0] and lines[2].endswith("n/a: needs classification")

    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["method"], r["density_label"], r["status"]) for r in records] == [
        ("edge-popup", "0.1", "ok"), ("edge-popup", "planted", "ok"), ("snip", "0.1", "n/a"),
        ("snip", "planted", "n/a")]
    planted = plant_task("relu", 5, 100, 0)
    ep01, ep_planted = records[0], records[1]
    assert ep_planted["density"] == planted.density == ep_planted["planted_density"]
    # the planted column: one global threshold, ⌈ρ·N⌉ = ⌈(4 / 20,200)·20,200⌉ = 5 (the float ρ rounds up)
    assert ep_planted["achieved_density"] == pytest.approx(5 / 20_200)
    assert ep01["achieved_density"] == pytest.approx(0.1) and ep01["epochs"] == 1 and ep01["batch_size"] == 256
    configs = [json.loads((Path(r["run_dir"]) / "config.json").read_text()) for r in (ep01, ep_planted)]
    assert [(c["scope"], c["bias_density"]) for c in configs] == [("layer", 1.0), ("global", 1.0)]
    for r in (ep01, ep_planted):
        assert r["metric"] == "mse" and r["test_metric"] > 0
        # the run's own test MSE and the recovery report's (float64 over the mother network) agree
        assert r["found_test_metric"] == pytest.approx(r["test_metric"], rel=1e-4)
        assert 0 <= r["jaccard"] <= r["recall"] <= 1 and isinstance(r["planted_path_survives"], bool)
        assert len(r["layer_jaccard"]) == 4 and r["planted_test_metric"] < 1e-3  # an exact solution: noise only
        assert -1 <= r["recall_lift"] <= 1 and -1 <= r["jaccard_lift"] <= 1
        assert r["bias_recall"] is None and r["bias_recall_lift"] is None  # the ReLU ticket plants no bias
        # ReLU's ticket fits every budget: the reference is the planted ticket, raw outputs as searched
        assert r["representable"] and r["best_within_budget_as_searched"] == r["planted_test_metric_raw"]

    md = (out / "bench.md").read_text()
    assert "## relu: test mse" in md and "| method | 0.1 | planted (0.0002) |" in md
    assert "| snip | n/a: needs classification | n/a: needs classification |" in md
    row = next(line for line in md.splitlines() if line.startswith("| edge-popup |"))
    assert row.count("|") == 4 and row.count(" · J+ ") == 2 and row.count(" ± ") == 2 and row.count(" · × ") == 2
    assert row.count(" · bR+ n/a") == 2
    ref = next(line for line in md.splitlines() if line.startswith("| planted ticket cut to the budget |"))
    assert ref.count("(representable 1/1)") == 2
    assert "strongticket plant --bench --quick" in md and "--densities 0.1,planted" in md and "torch " in md
    assert '| edge-popup | {} | 1 | 256 |' in md and 'Protocol ours' in md and "2 runs searched now" in md
    assert (out / "relu.png").is_file() == ("plots skipped" not in md)

    built.clear()
    assert main(["plant", "--bench", "--quick", *TINY]) == 0
    again = capsys.readouterr().out.splitlines()
    assert built == []  # nothing searched again
    assert "(finished before)" in again[0] and "(finished before)" in again[1]
    rerun = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "cached"} for r in rerun] == \
        [{k: v for k, v in r.items() if k != "cached"} for r in records]
    assert "0 runs searched now, 2 finished before" in (out / "bench.md").read_text()


def test_bench_skips_unregistered_methods_and_says_plots_skipped_without_matplotlib(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(bench.OURS, "future-algo", {"lr": 1.0})
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert "future-algo" in bench.default_methods() and "future-algo" not in methods.METHODS
    threads = torch.get_num_threads()
    path = bench.run_bench(tmp_path / "b", tasks=("helix",), methods=("future-algo", "edge-popup"),
                           densities=(0.5,), epochs=1, quick=True, progress=False)
    assert torch.get_num_threads() == threads  # the bench's one thread is given back
    md = path.read_text()
    assert "Skipped, not registered in strongticket.search.methods.METHODS: future-algo." in md
    table = md[md.index("## helix"):md.index("## Settings")]
    assert "| future-algo |" not in table and "| edge-popup |" in table and '| future-algo | {"lr": 1.0} |' in md
    assert "plots skipped: matplotlib is not installed" in md and not list((tmp_path / "b").glob("*.png"))
    records = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert [(r["method"], r["status"]) for r in records] == [("future-algo", "skipped"), ("edge-popup", "ok")]


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ("square",)}, "tasks must be among circle, relu, helix, got 'square'"),
    ({"tasks": ()}, "tasks must list at least one value, got none"),
    ({"methods": ("edge-pop",)}, "algos must be among edge-popup, "),
    ({"densities": (1.5,)}, "densities must be numbers in (0, 1] or 'planted', got 1.5"),
    ({"densities": ("dense",)}, "densities must be numbers in (0, 1] or 'planted', got 'dense'"),
    ({"seeds": (0, 0)}, "seeds must not repeat a value, got 0,0"),
    ({"seeds": (-1,)}, "seeds must be integers in [0, 4294967295], got -1"),
    ({"epochs": 0}, "epochs must be an integer in [1, 100000], got 0"),
])
def test_bench_rejects_bad_arguments_in_one_line_before_writing(tmp_path, kwargs, message) -> None:
    with pytest.raises(ValueError) as e:
        bench.run_bench(tmp_path / "b", progress=False, **kwargs)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("args, message", [
    (["--bench", "--seeds", "0,x"], "seeds must be comma-separated integers, got '0,x'"),
    (["--bench", "--epochs", "two"], "epochs must be an integer in [1, 100000], got 'two'"),
    (["--bench", "--densities", "0.1,half"], "densities must be numbers in (0, 1] or 'planted', got 'half'"),
    (["--bench", "--algos", "edge-popup,nope"], "algos must be among "),
    (["--bench", "--task", "relu"], "--bench takes --tasks, --algos, --densities, --seeds, --epochs, --scaled, "
                                    "--protocol and --out, not --task"),
    (["--task", "relu", "--seeds", "0,1"], "--seeds needs --bench"),
    (["--out", "x", "--epochs", "1"], "--out, --epochs need --bench"),
])
def test_cli_bench_bad_values_exit_2_with_one_line(tmp_path, monkeypatch, capsys, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["plant", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"strongticket: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_bench_runs_pruning_at_init_on_the_planted_network(tmp_path) -> None:
    bench.run_bench(tmp_path / "b", tasks=("relu",), methods=("magnitude",), densities=(0.5,), seeds=(0,),
                    progress=False)
    record = json.loads((tmp_path / "b" / "results.jsonl").read_text())
    assert record["status"] == "ok" and record["achieved_density"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("scaled", [False, True])
def test_bench_searches_the_raw_or_the_scaled_planted_network(tmp_path, scaled) -> None:
    out = tmp_path / "b"
    bench.run_bench(out, tasks=("relu",), methods=("edge-popup",), densities=("planted",), seeds=(0,), epochs=1,
                    quick=True, progress=False, scaled=scaled)
    r = json.loads((out / "results.jsonl").read_text())
    config = json.loads((Path(r["run_dir"]) / "config.json").read_text())
    assert config["model"] == ("planted-scaled" if scaled else "planted")
    assert r["planted_test_metric"] < 1e-3  # the target: outputs / planting scale
    # in Plant 'n' Seek's raw network the planted masks output scale * target, far from the target
    assert (r["planted_test_metric_as_searched"] < 1e-3) == scaled
    assert r["found_test_metric"] == pytest.approx(r["test_metric"], rel=1e-4)
    md = (out / "bench.md").read_text()
    assert ("--scaled" in md) == scaled
    assert ("(`--model planted-scaled`, outputs / scale)" if scaled else "(`--model planted`, raw outputs)") in md
    # the reference is the planted ticket in the network as searched
    assert r["best_within_budget_as_searched"] == r["planted_test_metric_as_searched"]


def test_each_cell_is_compared_with_its_own_seeds_planted_ticket(tmp_path) -> None:
    """Seeds 0 and 1 plant different networks: each record carries its own seed's reference, and the table's
    reference row is their mean, not seed 0's."""
    bench.run_bench(tmp_path / "b", tasks=("relu",), methods=("random",), densities=("planted",), seeds=(0, 1),
                    progress=False)
    records = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    raw = []
    for r in records:
        p = plant_task("relu", 5, 100, r["seed"])
        data = make_task("relu", seed=PLANTED_TASK_SEED)
        expected = masked_task_metric(p, list(p.masks), data.x_test, data.y_test, list(p.bias_masks), scaled=False)
        assert r["planted_test_metric_raw"] == r["best_within_budget_as_searched"] == expected
        raw.append(expected)
    assert raw[0] != raw[1]
    md = (tmp_path / "b" / "bench.md").read_text()
    mean = (raw[0] + raw[1]) / 2
    assert f"| planted ticket cut to the budget | {mean:.3g} ± " in md and "(representable 2/2)" in md


def test_original_protocol_runs_each_method_under_its_preset_within_the_benchmarks_budget(tmp_path) -> None:
    folder = tmp_path / "r"
    ours = bench._config("circle", "annealed-edge-popup", 0.1, 0.005, 0, 10, False, folder, "cpu")
    original = bench._config("circle", "annealed-edge-popup", 0.1, 0.005, 0, 10, False, folder, "cpu",
                             protocol="original")
    assert ours.preset is None and ours.lr == 0.2 and ours.batch_size == 64 and ours.select_epoch == "best-val"
    assert original.preset == "fischer2022" and original.batch_size == 32 and original.select_epoch == "last"
    # the benchmark's budget wins over the preset's, and both get the same optimizer steps (within one epoch)
    assert (original.scope, original.bias_density) == (ours.scope, ours.bias_density) == ("layer", 1.0)
    n = bench._train_size("circle")
    steps = {c.batch_size: c.epochs * -(-n // c.batch_size) for c in (ours, original)}
    assert abs(steps[32] - steps[64]) <= -(-n // 32)
    gem = bench._config("circle", "gem-miner", "planted", 0.005, 0, 10, False, folder, "cpu", protocol="original")
    assert gem.preset == "sreenivasan2022" and gem.scope == "global" and gem.freeze_every <= gem.epochs - 2
    with pytest.raises(ValueError, match="protocol must be one of ours, original, got 'theirs'"):
        bench.run_bench(tmp_path / "b", protocol="theirs", progress=False)


def test_a_cell_whose_runs_ignore_the_budget_says_so_with_the_density_kept() -> None:
    from strongticket.planted.bench import _cell

    def run(density, achieved, metric=0.9):
        return {"status": "ok", "metric": "accuracy", "test_metric": metric, "best_within_budget_as_searched": 0.95,
                "collapsed_layers": [], "jaccard_lift": 0.0, "recall_lift": 0.0, "bias_recall_lift": None,
                "density": density, "achieved_density": achieved}

    within = _cell([run(0.1, 0.1), run(0.1, 0.1004), run(4 / 20_200, 5 / 20_200)])  # ⌈·⌉ rounding is within
    assert "over budget" not in within
    over = _cell([run(0.01, 0.50), run(0.01, 0.52), run(0.01, 0.0101)])
    assert over.endswith(" · **over budget** 2/3: kept 0.51")
