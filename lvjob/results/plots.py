"""Plots of a study's results (SPEC §8), from `results/` and the run directories it lists.

    loss_stage1, loss_stage2, loss_default_final   training loss per step and validation loss
    forecasts                                      a few test systems: context, truth, the zero-shot
                                                   and fine-tuned forecasts (median and 10-90%
                                                   interval when several samples were drawn) and
                                                   the physics baseline
    lead_time                                      MAE by forecast step of every row of Table 3
    flop_budget                                    FLOPs spent by experiment, stacked, against the
                                                   plan and the budget
    throughput                                     steps/s of every training run against wall-clock
                                                   time, one panel per stage: requeue gaps show as
                                                   breaks, from the rows' own UTC times

Each as PNG and PDF in `results/plots/`. Only `runs.json`, `table4_flops.csv` and the run
directories' `metrics.jsonl` and `forecasts.npz` are read, so plots can be drawn from results
pulled off a cluster without its checkpoints (`make pull`, then `make plots`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from lvjob.core.atomic import read_jsonl
from lvjob.core.paths import ResultsDir, RunDir
from lvjob.forecasting.scores import interval
from lvjob.results.index import IndexEntry, RunIndex
from lvjob.study.stages import stage_table
from lvjob.core.timestamps import parse_utc

VARIABLES = ("prey", "predator")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Producer": None})
    return paths


def _curve(run_dir: Path) -> tuple[list, list, list, list]:
    """(steps, losses, validation steps, validation losses); a step written twice counts once (the last)."""
    by_step = {r["step"]: r for r in read_jsonl(RunDir(run_dir).metrics)}
    rows = [by_step[s] for s in sorted(by_step)]
    vals = [r for r in rows if "val_loss" in r]
    return [r["step"] for r in rows], [r["loss"] for r in rows], [r["step"] for r in vals], [r["val_loss"] for r in vals]


def loss_figure(runs: list[IndexEntry], title: str, root: Path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, entry in enumerate(runs):
        if not entry.run.run_dir:
            continue
        steps, loss, vsteps, vloss = _curve(root / entry.run.run_dir)
        if not steps:
            continue
        color = f"C{i % 10}"
        status = "" if entry.complete else f" ({entry.run.status})"
        ax.plot(steps, loss, color=color, alpha=0.35, lw=1)
        ax.plot(vsteps, vloss, color=color, marker="o", ms=3, lw=1.5, label=f"{entry.node}{status}")
    ax.set(title=title, xlabel="training step", ylabel="cross-entropy loss (nats per token)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, ncol=2, title="validation loss (line + dots); training loss faint", title_fontsize=7)
    return fig


def forecast_figure(sources: list[tuple[str, Path | None]], n_systems: int = 3):
    """Prey and predator of the first evaluated systems: context, truth and each source's forecast.

    `sources`: (label, forecasts.npz) pairs that forecast the same systems (Table 3's rows do).
    """
    plt = pyplot()
    loaded = [(label, np.load(path)) for label, path in sources if path is not None and path.exists()]
    if not loaded:
        return None
    ref = loaded[0][1]
    split = str(ref["split"]) if "split" in ref else "validation"
    n = min(n_systems, len(ref["systems"]))
    fig, axes = plt.subplots(n, 2, figsize=(10, 2.6 * n), squeeze=False)
    ctx_len, horizon = ref["contexts"].shape[1], ref["truth"].shape[1]
    t_ctx, t_hor = np.arange(ctx_len), np.arange(ctx_len, ctx_len + horizon)
    for row in range(n):
        for v, name in enumerate(VARIABLES):
            ax = axes[row, v]
            ax.plot(t_ctx, ref["contexts"][row, :, v], color="0.3", lw=1, label="context")
            ax.plot(t_hor, ref["truth"][row, :, v], color="black", lw=2, label="truth")
            for (label, f), color in zip(loaded, ("C1", "C0", "C2", "C3")):
                _draw_forecast(ax, t_hor, f["predictions"][row, :, v], f["samples"][row, :, :, v], label, color)
            ax.axvline(ctx_len - 0.5, color="0.6", ls=":", lw=1)
            ax.set_title(f"{split} system {int(ref['systems'][row])}: {name}", fontsize=9)
            ax.set_xlabel("time point")
            ax.set_ylabel(f"{name} population")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Forecasts of the horizon (right of the dotted line) against the truth", fontsize=10)
    fig.tight_layout()
    return fig


def _draw_forecast(ax, t_hor, median: np.ndarray, samples: np.ndarray, label: str, color: str) -> None:
    """One forecaster on one panel: its point forecast (the median of its samples) and, with several, their 10-90% interval."""
    k = len(samples)
    ax.plot(t_hor, median, color=color, lw=1.5, label=f"{label} ({'median of ' + str(k) if k > 1 else 'forecast'})")
    if k > 1 and not np.isnan(samples).any():
        lower, upper = interval(samples[None, :, :, None])
        ax.fill_between(t_hor, lower[0, :, 0], upper[0, :, 0], color=color, alpha=0.2)


def lead_time_figure(runs: list[IndexEntry]):
    """MAE against forecast step for every compared run (Table 3's rows) that has finished."""
    shown = [r for r in runs if r.label and r.complete and r.run.lead_time_mae]
    if not shown:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in shown:
        mae = r.run.lead_time_mae
        ax.plot(np.arange(1, len(mae) + 1), mae, marker=".", lw=1.2, ls="--" if r.stage == "baselines" else "-", label=r.label)
    ax.set_yscale("log")
    ax.set_xlabel("forecast step (lead time)")
    ax.set_ylabel("MAE (population units, log scale)")
    ax.set_title(f"Error by lead time on the {shown[0].run.split or 'test'} systems", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def budget_figure(table4_csv: Path):
    plt = pyplot()
    with open(table4_csv) as f:
        rows = {r["experiment"]: r for r in csv.DictReader(f)}
    experiments = [e for e in rows if e not in ("total", "budget")]
    budget = float(rows["budget"]["spent"])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for col, x in (("planned", 0), ("spent", 1)):
        bottom = 0.0
        for i, exp in enumerate(experiments):
            value = float(rows[exp][col])
            ax.bar(x, value, bottom=bottom, color=f"C{i}", label=exp if x == 0 else None, width=0.6)
            bottom += value
    ax.axhline(budget, color="red", ls="--", lw=1.5, label=f"budget {budget:.0e}")
    ax.set_xticks([0, 1], ["planned", "spent"])
    ax.set(ylabel="FLOPs", title="FLOPs by experiment against the budget")
    if float(rows["total"]["planned"]) < budget / 100:
        ax.set_yscale("log")  # a demo-size study is far below the budget: show both on one axis
        ax.set_ylim(bottom=min(float(rows["total"]["spent"]), float(rows["total"]["planned"])) / 10)
        ax.set_title("FLOPs by experiment against the budget (log scale)")
    ax.legend(fontsize=8)
    return fig


def speed_series(rows: list[dict], every: int = 10) -> list[tuple[list, list]]:
    """Per attempt: (UTC times, steps/s over each block of `every` steps); rows without times are skipped."""
    out = []
    for attempt in dict.fromkeys(r.get("attempt") for r in rows if r.get("time")):
        mine = [r for r in rows if r.get("attempt") == attempt and r.get("time")][::every]
        pairs = list(zip(mine, mine[1:]))
        times = [parse_utc(b["time"]) for _, b in pairs]
        speeds = [(b["step"] - a["step"]) / max(b["elapsed"] - a["elapsed"], 1e-9) for a, b in pairs]
        if times:
            out.append((times, speeds))
    return out


def throughput_figure(runs: list[IndexEntry], root: Path):
    """Steps/s of each training run over wall-clock time, one panel per stage, each attempt its own line."""
    stages = [s for s in dict.fromkeys(r.stage for r in runs) if any(_rows(root, r) for r in runs if r.stage == s)]
    if not stages:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(stages), 1, figsize=(7, 1.8 * len(stages) + 0.6), sharex=True, squeeze=False)
    for ax, stage in zip(axes[:, 0], stages):
        for i, entry in enumerate(r for r in runs if r.stage == stage):
            for j, (times, speeds) in enumerate(speed_series(_rows(root, entry))):
                ax.plot(times, speeds, color=f"C{i % 10}", lw=1.2, marker=".", ms=3, label=entry.node if j == 0 else None)
        ax.set_ylabel("steps/s", fontsize=8)
        ax.set_title(stage, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        if len(ax.lines) <= 10 and ax.lines:
            ax.legend(fontsize=6, ncol=3)
    axes[-1, 0].set_xlabel("wall-clock time (UTC); a break in a line is a requeue")
    fig.autofmt_xdate()
    return fig


def _rows(root: Path, entry: IndexEntry) -> list[dict]:
    return read_jsonl(RunDir(root / entry.run.run_dir).metrics) if entry.run.run_dir else []


def loss_plots() -> dict[tuple[str, str], list[str]]:
    """{(figure, title): the stages drawn in it}, from the stage table, in its order."""
    plots: dict[tuple[str, str], list[str]] = {}
    for s in stage_table():
        if s.loss_plot:
            plots.setdefault(s.loss_plot, []).append(s.name)
    return plots


def plot_results(results: str | Path, root: str | Path = ".") -> list[Path]:
    """Draw every plot from `results/`; run directories are resolved against `root`."""
    results, root = Path(results), Path(root)
    runs = RunIndex.from_json(json.loads(ResultsDir(results).index.read_text())).runs
    out = ResultsDir(results).plots
    plt = pyplot()
    written = []
    for (name, title), stages in loss_plots().items():
        fig = loss_figure([r for r in runs if r.stage in stages], title, root)
        written += _save(fig, out, name)
        plt.close(fig)
    by_node = {r.node: r for r in runs}

    def forecasts(node: str) -> Path | None:
        entry = by_node.get(node)
        return RunDir(root / entry.run.run_dir).forecasts if entry and entry.run.run_dir else None

    shown = [("zero-shot", "zero-shot-plain"), ("fine-tuned", "final"), ("physics baseline", "baseline-physics")]
    for name, fig in (("forecasts", forecast_figure([(label, forecasts(node)) for label, node in shown])),
                      ("lead_time", lead_time_figure(runs))):
        if fig is not None:
            written += _save(fig, out, name)
            plt.close(fig)
    flops_csv = ResultsDir(results).table("table4_flops", ".csv")
    if flops_csv.exists():
        fig = budget_figure(flops_csv)
        written += _save(fig, out, "flop_budget")
        plt.close(fig)
    fig = throughput_figure(runs, root)
    if fig is not None:
        written += _save(fig, out, "throughput")
        plt.close(fig)
    return written
