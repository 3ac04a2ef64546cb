"""``strongticket report RUN_DIR...``: a markdown table and plots drawn from the runs' logs, never re-measured.

Reads each run's ``config.json``, ``metrics.jsonl`` and ``summary.json``; writes ``report.md`` (one row per run,
plus mean ± std over runs that differ only by seed), ``accuracy.png`` (validation accuracy per epoch) and
``layer_density.png`` (kept fraction per masked layer). Regression runs (``test_mse`` in their summary, e.g. on
``planted-relu``) show MSE where classification runs show accuracy; a table of both kinds says which is which.
Plots need matplotlib (``pip install matplotlib``); without it the table is still written.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .files import FileCheckError, atomic_write, read_json

__all__ = ["load_run", "write_report", "mean_std"]


def load_run(folder: str | Path) -> dict[str, Any]:
    """A run's config, per-epoch metrics and summary; a folder that is not a finished run is a clear error."""
    folder = Path(folder)
    missing = [name for name in ("config.json", "metrics.jsonl", "summary.json") if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"run folder {str(folder)!r} must hold a finished run; missing {', '.join(missing)}")
    metrics = []
    for i, line in enumerate((folder / "metrics.jsonl").read_text(errors="replace").splitlines()):
        try:
            record = json.loads(line) if line.strip() else None
        except (json.JSONDecodeError, RecursionError):
            raise FileCheckError(f"{folder / 'metrics.jsonl'}: damaged log (line {i + 1} is not valid JSON)") from None
        if record is not None:
            metrics.append(record)
    return {
        "folder": folder,
        "config": read_json(folder / "config.json", "config.json"),
        "metrics": metrics,
        "summary": read_json(folder / "summary.json", "summary.json"),
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _metric(run: dict[str, Any]) -> str:
    """``"acc"`` for a classification run, ``"mse"`` for a regression run (the key its summary holds)."""
    return "acc" if "test_acc" in run["summary"] else "mse"


def _fmt(value: float, m: str, tag: bool) -> str:
    text = f"{value:.4f}" if m == "acc" else f"{value:.4g}"
    return f"{text} ({m})" if tag else text


def _group_key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in ("seed", "out", "device", "data_root")},
                      sort_keys=True)


def write_report(folders: Sequence[str | Path], out: str | Path) -> Path:
    """Write ``report.md`` (and the plots when matplotlib is importable) for the runs in ``folders`` to ``out``."""
    if not folders:
        raise ValueError("report needs at least one run folder, got none")
    runs = [load_run(f) for f in folders]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kinds = {_metric(r) for r in runs}
    mixed = len(kinds) > 1
    head = "metric" if mixed else next(iter(kinds))
    lines = ["# strongticket report", "",
             f"| run | model | data | density | init | seed | test {head} | val {head} | kept / total | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        c, s, m = r["config"], r["summary"], _metric(r)
        lines.append(f"| {r['folder'].name} | {c['model']} | {c['data']} | {c['density']} | {c['init']} | "
                     f"{c['seed']} | {_fmt(s[f'test_{m}'], m, mixed)} | {_fmt(s[f'val_{m}'], m, mixed)} | "
                     f"{s['kept_weights']:,} / {s['total_weights']:,} | {s['seconds']:.1f} |")
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(_group_key(r["config"]), []).append(r)
    if any(len(g) > 1 for g in groups.values()):
        lines += ["", "Over seeds (mean ± sample std):", "",
                  f"| model | data | density | init | seeds | test {head} | val {head} |",
                  "|---|---|---|---|---|---|---|"]
        for g in groups.values():
            c, m = g[0]["config"], _metric(g[0])
            t_mean, t_std = mean_std([r["summary"][f"test_{m}"] for r in g])
            v_mean, v_std = mean_std([r["summary"][f"val_{m}"] for r in g])
            seeds = ",".join(str(r["config"]["seed"]) for r in g)
            lines.append(f"| {c['model']} | {c['data']} | {c['density']} | {c['init']} | {seeds} | "
                         f"{_fmt(t_mean, m, False)} ± {_fmt(t_std, m, False)}{f' ({m})' if mixed else ''} | "
                         f"{_fmt(v_mean, m, False)} ± {_fmt(v_std, m, False)}{f' ({m})' if mixed else ''} |")
    plots = _plots(runs, out)
    if plots:
        lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    else:
        lines += ["", "(plots skipped: matplotlib is not installed; `pip install matplotlib`)"]
    return atomic_write(out / "report.md", "\n".join(lines) + "\n")


def _plots(runs: list[dict[str, Any]], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    kinds = {_metric(r) for r in runs}
    ylabel = {"acc": "validation accuracy", "mse": "validation MSE"}[kinds.pop()] if len(kinds) == 1 else \
        "validation accuracy / MSE"
    curves = [([m["epoch"] for m in r["metrics"]], [m[f"val_{_metric(r)}"] for m in r["metrics"]], {})
              for r in runs]
    densities = [(list(range(len(r["summary"]["layer_density"]))), r["summary"]["layer_density"], {"marker": "o"})
                 for r in runs]
    names = [r["folder"].name for r in runs]
    return [
        _plot(plt, out / "accuracy.png", names, curves, "epoch", ylabel, ylabel[0].upper() + ylabel[1:]),
        _plot(plt, out / "layer_density.png", names, densities, "masked layer", "kept fraction",
              "Per-layer density of the selected mask"),
    ]


def _plot(plt: Any, path: Path, names: list[str], lines: list[tuple[list, list, dict]], xlabel: str, ylabel: str,
          title: str) -> Path:
    """One line per run, a legend when there are few runs, written to ``path`` (PNG)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (xs, ys, style) in zip(names, lines):
        ax.plot(xs, ys, label=name, **style)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(names) <= 8:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
