"""The study's tables (SPEC §8) from its run index: pure functions, no files.

Input: the run index (`lvjob.results.aggregate.run_index`: one summary per run, the stages' choices), the
FLOP plan by experiment and the counter's per-step breakdown. Output: `Table`s (lvjob.results.tables).

A run that is not complete gives no error figures: its cells say why ("missing: failed",
"missing: running, step 12/60"). FLOPs spent count every run, finished or not, and the "runs
complete" column says how many finished.
"""

from __future__ import annotations

from lvjob.forecasting.scores import POINT_ERRORS, SCORES
from lvjob.models import flops
from lvjob.run.rundir import RunStatus
from lvjob.study.stages import stage_table
from lvjob.results.tables import Mark, Table


def why_missing(run: dict) -> Mark:
    status = run.get("status", RunStatus.MISSING)
    if status in (RunStatus.RUNNING, RunStatus.PREEMPTED) and run.get("steps"):
        return Mark(f"missing: {status}, step {run.get('step') or 0}/{run['steps']}")
    if status == RunStatus.MISSING:
        return Mark("missing: not started")
    return Mark(f"missing: {status}")


def _done(run: dict | None) -> bool:
    return bool(run) and run.get("status") == RunStatus.COMPLETE


def _errors(run: dict | None, metrics: tuple[str, ...] = POINT_ERRORS) -> list:
    if not _done(run):
        mark = why_missing(run or {})
        return [mark] * len(metrics)
    return [run.get(f"eval_{m}") for m in metrics]


def step_flops_table(shape: flops.ModelShape, model: str, batch: int, context: int, rank: int,
                     targets: tuple[str, ...]) -> Table:
    """Table 1: one training step per component, full fine-tuning vs LoRA on `targets`, the rules and executed."""
    cols = flops.step_columns(shape, batch, context, rank, targets)
    rows = [tuple([comp] + [getattr(c, comp) for c in cols.values()]) for comp in flops.COMPONENTS]
    rows.append(tuple(["total"] + [c.total for c in cols.values()]))
    return Table(
        name="table1_step_flops",
        title=f"Table 1. FLOPs of one training step ({model}, batch {batch} x {context} tokens, LoRA on {', '.join(targets)})",
        columns=("component", *cols), rows=tuple(rows), formats=("",) + (".4e",) * len(cols),
        notes=("Rules (SPEC §5): a training step = 3 x forward, LoRA or not; the budget is charged by them. "
               "Executed: what autograd runs (frozen layers compute only input gradients).",))


def context_table(index: dict) -> Table:
    """Table 2: forecast error by stage 2's context length."""
    runs = sorted((r for r in index["runs"] if r["stage"] == "stage2"), key=lambda r: r["node"])
    rows = []
    for r in runs:
        context = r.get("context") or int(r["node"].removeprefix("stage2-ctx"))
        rows.append((context, r.get("rank") or Mark("missing"), r.get("lr") or Mark("missing"), *_errors(r),
                     r.get("parse_rate") if _done(r) else why_missing(r)))
    rows.sort(key=lambda row: row[0])
    choice = (index.get("choices") or {}).get("final")
    notes = (f"The final run took context {choice['chosen']['context']} (lowest MAE).",) if choice else ()
    return Table(name="table2_context_length", title="Table 2. Forecast error by context length (stage 2, validation systems)",
                 columns=("context (tokens)", "rank", "lr", "MAE", "MSE", "RMSE", "parse rate"),
                 rows=tuple(rows), formats=("d", "d", "g", ".4g", ".4g", ".4g", ".1%"), notes=notes)


def comparison_table(index: dict, labels: dict[str, str]) -> Table:
    """Table 3: the compared runs (`labels`: node key -> row label, from the stage table) on the test systems."""
    by_node = {r["node"]: r for r in index["runs"]}
    rows = []
    for key, label in labels.items():
        r = by_node.get(key) or {}
        scores = _errors(r, SCORES)
        if _done(r) and r.get("samples") == 1:  # one forecast has no interval: its "coverage" would count exact hits
            scores[SCORES.index("coverage")] = Mark("-")
        rows.append((label, *scores, _parse_rate(r), r.get("samples") if _done(r) else why_missing(r),
                     r.get("series") if _done(r) else why_missing(r)))
    return Table(name="table3_forecast_error", title=f"Table 3. Forecast error on the {_split_of(by_node, labels)} systems' horizon",
                 columns=("model", "MAE", "MSE", "RMSE", "MASE", "CRPS", "coverage 10-90%", "parse rate", "samples", "series"),
                 rows=tuple(rows), formats=("", ".4g", ".4g", ".4g", ".4g", ".4g", ".1%", ".1%", "d", "d"),
                 notes=("Scores in population units over the horizon, both variables (SPEC §4): the point forecast is the "
                        "median of the samples; MASE divides each series' MAE by its context's one-step naive MAE; CRPS "
                        "is of the samples' empirical distribution (a single forecast's CRPS is its MAE); coverage is "
                        "the share of true values inside the samples' 10-90% interval. Baselines are deterministic "
                        "(1 sample: no interval, no coverage) and write numbers directly, so they have no parse rate.",))


def _parse_rate(run: dict):
    if not _done(run):
        return why_missing(run)
    return Mark("-") if run.get("parse_rate") is None else run["parse_rate"]


def _split_of(by_node: dict, keys) -> str:
    """The split the compared runs scored, in words (one word when they agree, which the stage table ensures)."""
    splits = sorted({by_node[k]["split"] for k in keys if _done(by_node.get(k)) and by_node[k].get("split")})
    return " / ".join(splits) or "test"


def lead_time_table(index: dict, labels: dict[str, str]) -> Table:
    """MAE by forecast step (1 ... horizon) of every row of Table 3."""
    by_node = {r["node"]: r for r in index["runs"]}
    horizon = max((len(r.get("lead_time_mae") or []) for r in index["runs"]), default=0)
    rows = []
    for key, label in labels.items():
        r = by_node.get(key) or {}
        steps = r.get("lead_time_mae") if _done(r) else None
        rows.append((label, *(steps if steps else [why_missing(r) if not _done(r) else Mark("-")] * horizon)))
    return Table(name="table3_lead_time", title=f"MAE by lead time on the {_split_of(by_node, labels)} systems (the rows of Table 3)",
                 columns=("model", *(f"step {h}" for h in range(1, horizon + 1))), rows=tuple(rows),
                 formats=("",) + (".3g",) * horizon,
                 notes=("Mean absolute error over the series and both variables at each step after the context.",))


def flops_table(index: dict, planned: dict[str, int], budget: float, experiments: list[str] | None = None) -> Table:
    """Table 4: FLOPs by experiment (the stages that run jobs): spent, planned, lost to preemption; the
    total against the budget."""
    experiments = experiments or [s.name for s in stage_table() if s.runs_jobs]
    rows, spent_total, lost_total = [], 0, 0
    for exp in experiments:
        runs = [r for r in index["runs"] if r["stage"] == exp]
        spent = sum(r.get("flops") or 0 for r in runs)
        lost = sum(r.get("lost_flops") or 0 for r in runs)
        spent_total, lost_total = spent_total + spent, lost_total + lost
        rows.append((exp, f"{sum(map(_done, runs))}/{len(runs)}", spent, planned.get(exp, 0), lost,
                     spent / planned[exp] if planned.get(exp) else Mark("-")))
    plan_total = sum(planned.get(e, 0) for e in experiments)
    complete = sum(map(_done, index["runs"]))
    rows.append(("total", f"{complete}/{len(index['runs'])}", spent_total, plan_total, lost_total,
                 spent_total / plan_total if plan_total else Mark("-")))
    rows.append(("budget", "", budget, budget, Mark("-"), spent_total / budget))
    return Table(name="table4_flops", title="Table 4. FLOPs by experiment",
                 columns=("experiment", "runs complete", "spent", "planned", "lost to preemption", "spent / planned"),
                 rows=tuple(rows), formats=("", "", ".3e", ".3e", ".3e", ".1%"),
                 notes=("Spent: what the runs computed (training 3 x forward per step, validation forwards, prompts "
                        "and generated tokens), re-done steps included; lost: the part re-done after a preemption. "
                        "The last column of the budget row is the share of the budget spent.",))


def grid_table(index: dict) -> Table:
    """Stage 1: final validation loss by rank (rows) x learning rate (columns)."""
    runs = [r for r in index["runs"] if r["stage"] == "stage1"]
    ranks = sorted({r["rank"] for r in runs if r.get("rank") is not None})
    lrs = sorted({r["lr"] for r in runs if r.get("lr") is not None}, reverse=True)
    cell = {(r.get("rank"), r.get("lr")): r for r in runs}
    rows = []
    for rank in ranks:
        row = [rank]
        for lr in lrs:
            r = cell.get((rank, lr))
            row.append(r["val_loss"] if _done(r) and r.get("val_loss") is not None else why_missing(r or {}))
        rows.append(tuple(row))
    choice = (index.get("choices") or {}).get("stage2")
    notes = (f"Stage 2 took rank {choice['chosen']['rank']}, lr {choice['chosen']['lr']:g} "
             f"(lowest validation loss, run {choice['best']}).",) if choice else ()
    return Table(name="stage1_grid", title="Stage 1: validation loss by LoRA rank x learning rate",
                 columns=("rank", *(f"lr {lr:g}" for lr in lrs)), rows=tuple(rows),
                 formats=("d",) + (".4f",) * len(lrs), notes=notes)


def choices_table(index: dict) -> Table:
    rows = []
    for stage, choice in (index.get("choices") or {}).items():
        if not choice:
            rows.append((stage, Mark("not chosen yet"), "", "", ""))
            continue
        done = sum(c["status"] == RunStatus.COMPLETE for c in choice["candidates"])
        rows.append((stage, ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in choice["chosen"].items()),
                     f"lowest {choice['metric']}", choice["best"], f"{done}/{len(choice['candidates'])}"))
    return Table(name="choices", title="Configurations chosen by the late-bound stages",
                 columns=("stage", "chosen", "by", "from run", "candidates complete"), rows=tuple(rows))
