"""The command line: flags, config files, one-line errors, eval --json."""

import json
import subprocess
import sys

import pytest

from strongticket.cli import main
from strongticket.config import SearchConfig

FAST = ["--widths", "24", "--epochs", "1", "--batch-size", "256"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--density", "1.5"], "density must be in (0, 1], got 1.5"),
        (["--density", "0"], "density must be in (0, 1], got 0.0"),
        (["--widths", "64,-3"], "widths[1] must be an integer in [1, 1048576], got -3"),
        (["--widths", "64,x"], "widths must be comma-separated integers, got '64,x'"),
        (["--epochs", "0"], "epochs must be an integer in [1, 100000], got 0"),
        (["--seed", "-1"], "seed must be an integer in [0, 4294967295], got -1"),
        (["--lr", "nan"], "lr must be a number in (0, 1e+06], got nan"),
        (["--data-root", "/no/such/folder"], "data_root must be an existing folder, got '/no/such/folder'"),
        (["--config", "/no/such.toml"], "config file must be an existing .toml or .json file, got '/no/such.toml'"),
    ],
)
def test_bad_search_values_give_one_line_and_exit_2(capsys, tmp_path, argv, message):
    code, out, err = _run(capsys, "search", "--out", str(tmp_path / "r"), *argv)
    assert code == 2
    assert err == f"strongticket: error: {message}\n"
    assert not (tmp_path / "r").exists()


def test_unknown_model_lists_the_valid_ones(capsys):
    code, _, err = _run(capsys, "search", "--model", "resnet999")
    assert code == 2
    assert err == ("strongticket: error: model must be one of mlp, conv2, conv4, conv6, conv8, planted, "
                   "planted-scaled, resnet20, resnet18, transformer, got 'resnet999'\n")


def test_config_file_then_flags_override(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('widths = [24]\nepochs = 1\nbatch-size = 256\ndensity = 0.25\nseed = 7\n')
    code, out, _ = _run(capsys, "search", "--config", str(cfg), "--seed", "3", "--out", str(tmp_path / "r"))
    assert code == 0, out
    resolved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert resolved["density"] == 0.25 and resolved["seed"] == 3 and resolved["widths"] == [24]
    bad = tmp_path / "bad.json"
    bad.write_text('{"widht": [3]}')
    code, _, err = _run(capsys, "search", "--config", str(bad))
    assert code == 2 and "unknown field 'widht'; valid fields: data, data_root, model" in err


def test_default_run_folder_is_named_by_the_config_hash(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, "search", *FAST)
    assert code == 0
    name = SearchConfig(widths=(24,), epochs=1, batch_size=256).run_name()
    assert (tmp_path / "runs" / name / "ticket.safetensors").is_file()
    code, out, _ = _run(capsys, "search", *FAST, "--device", "cpu")  # device is not part of the hash
    assert "(resuming)" in out


def test_eval_json_is_one_object_matching_the_run(tmp_path, capsys):
    assert main(["search", *FAST, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    capsys.readouterr()
    code, out, _ = _run(capsys, "eval", str(tmp_path / "ticket.safetensors"), "--json")
    assert code == 0 and out.count("\n") == 1
    result = json.loads(out)
    assert result["test_acc"] == summary["test_acc"]
    code, out, _ = _run(capsys, "eval", str(tmp_path / "ticket.safetensors"))
    assert "same as the run's" in out


def test_eval_of_a_truncated_ticket_is_one_line(tmp_path, capsys):
    assert main(["search", *FAST, "--out", str(tmp_path)]) == 0
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((tmp_path / "ticket.safetensors").read_bytes()[:300])
    code, _, err = _run(capsys, "eval", str(bad))
    assert code == 2 and err.startswith("strongticket: error: ") and "truncated ticket" in err
    assert err.count("\n") == 1


def test_python_dash_m_runs_the_cli(tmp_path):
    done = subprocess.run([sys.executable, "-m", "strongticket", "search", *FAST, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "test acc" in done.stdout and "backend torch" in done.stdout
    assert done.stderr == ""  # no warnings, no progress bar when not a TTY


def test_theory_commands_are_wired_and_eval_reads_theory_tickets(tmp_path, capsys):
    ticket = tmp_path / "pensia.safetensors"
    code = main(["theory", "verify", "--construction", "pensia", "--target-widths", "3,4,1", "--draws", "1",
                 "--samples", "500", "--steps", "10", "--ticket", str(ticket)])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", str(ticket)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pensia construction: kept ") and "weights sha256 ok" in out
    code = main(["eval", str(ticket), "--sanity", "shuffle"])
    assert code == 2 and "sanity checks apply to searched tickets" in capsys.readouterr().err


def test_conv2_runs_on_digits_from_the_cli(tmp_path, capsys):
    code = main(["search", "--model", "conv2", "--width", "0.25", "--widths", "32", "--epochs", "4",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "conv2 [32] ×0.25" in out
    assert json.loads((tmp_path / "summary.json").read_text())["test_acc"] > 0.3


def test_tensorboard_logging_or_a_clear_error(tmp_path, capsys):
    code = main(["search", *FAST, "--tensorboard", "--out", str(tmp_path)])
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert code == 2
        assert "tensorboard must be installed for --tensorboard: pip install tensorboard" in capsys.readouterr().err
    else:
        assert code == 0 and any((tmp_path / "tensorboard").iterdir())


def test_export_command_writes_formats_and_reports_bad_files_in_one_line(tmp_path, capsys):
    assert main(["search", *FAST, "--out", str(tmp_path)]) == 0
    ticket = tmp_path / "ticket.safetensors"
    capsys.readouterr()
    for fmt in ("packed", "state_dict"):
        out_path = tmp_path / f"t.{fmt}"
        assert main(["export", str(ticket), "--format", fmt, "--out", str(out_path)]) == 0
        assert capsys.readouterr().out.startswith(f"{fmt} export: {out_path}") and out_path.stat().st_size > 0
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(ticket.read_bytes()[:100])
    assert main(["export", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("strongticket: error: ") and err.count("\n") == 1


def test_plant_command_prints_exact_planted_counts(capsys):
    assert main(["plant", "--task", "relu", "--depth", "3", "--width", "100", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "total  :      2 /    200  density 0.0100" in out
    assert main(["plant", "--task", "spiral"]) == 2
    assert "task must be one of circle, relu, helix, got 'spiral'" in capsys.readouterr().err


def test_bench_topk_runs_and_reports_identical_masks(capsys):
    code, out, _ = _run(capsys, "bench", "topk", "--sizes", "10", "--densities", "0.3", "--repeats", "1")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("| 2^10 |"))
    assert "| 0.3 | 308 |" in row and "True" in row  # ⌈0.3 · 1024⌉ kept, same mask as the definition


def test_bench_names_the_benchmarks_it_has(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "nope"])
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "kernels" in err and "topk" in err
