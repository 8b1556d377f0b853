"""The study's last job: gather every run into the run index, the tables and the summary.

Writes into the study's own results folder (lvjob.study.choices.study_results), then points the profile's
`results_dir` (`results/`) at it, so `results/` shows the study aggregated last and two variants of one
study (different settings) never overwrite each other:

    runs.json        the run index (lvjob.results.index): one entry per run of the study and the stages' choices
    table1_step_flops, table2_context_length, table3_forecast_error, table3_differences, table3_lead_time, table4_flops,
    stage1_grid, choices   each as .md, .csv and .tex (booktabs)
    summary.md       every table with what it shows, readable on its own, the code versions the runs came from, and
                     which of Table 3's differences are findings (their intervals exclude zero)

It tolerates runs that are missing, running, failed or resumed after a requeue: they are listed as
such, and their cells say so. Nothing carries a timestamp: the same runs give the same files.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from lvjob.core.paths import made_by_lvjob, results_variants
from lvjob.core.timestamps import utc_compact
from lvjob.core import atomic
from lvjob.models import flops
from lvjob.models.registry import MODELS
from lvjob.results import report
from lvjob.results.uncertainty import LEVEL
from lvjob.study.plan import plan_study
from lvjob.cluster.profile import Profile
from lvjob.results.index import IndexEntry, RunIndex, run_index
from lvjob.study.choices import study_results
from lvjob.study.spec import Study
from lvjob.study.stages import study_nodes
from lvjob.results.tables import Table, to_csv, to_latex, to_markdown


def compared(study: Study) -> tuple[dict[str, str], str]:
    """Table 3's rows (node key -> label) and the zero-shot node the others are compared with: the trained prompt's."""
    return {n.key: n.label for n in study_nodes(study) if n.label}, f"zero-shot-{study.evaluation.trained_prompt}"


def study_tables(study: Study, index: RunIndex) -> list[Table]:
    plan = plan_study(study)
    d = study.default
    labels, reference = compared(study)
    return [
        report.step_flops_table(flops.shape_of(study.model), study.model, study.training.batch_size, d.context, d.rank,
                                study.lora.targets),
        report.context_table(index),
        report.comparison_table(index, labels),
        report.differences_table(report.differences(index, labels, reference), labels.get(reference, reference)),
        report.lead_time_table(index, labels),
        report.flops_table(index, plan.by_experiment(), study.budget_flops),
        report.grid_table(index),
        report.choices_table(index),
    ]


def summary(study: Study, index: RunIndex, tables: list[Table]) -> str:
    complete = sum(r.complete for r in index.runs)
    model = MODELS[study.model].description or f"`{study.model}`"
    lines = [f"# Results: {study.name} (scale {study.scale})", "",
             f"Model: {model}. Runs complete: {complete} of {len(index.runs)}; a table cell marked `missing: ...` "
             "belongs to a run that has not finished, and says why.", ""]
    lines += split_lines(study)
    lines += code_lines(code_versions(index.runs))
    lines += finding_lines(report.differences(index, *compared(study)))
    for table in tables:
        lines += [to_markdown(table)]
    lines += ["Each table is also in CSV (full precision) and LaTeX (booktabs) beside this file; "
              "`runs.json` lists every run with its directory."]
    return "\n".join(lines) + "\n"


def finding_lines(found: dict) -> list[str]:
    """summary.md's statement of each comparison of Table 3: a finding only where its interval excludes zero."""
    lines = []
    for label, against in found.items():
        for other, d in against.items():
            if d is None:
                continue
            span = f"mean difference {d.mean:+.3g}, {LEVEL:.0%} interval {d.low:+.3g} to {d.high:+.3g}, {d.series} series"
            lines.append(f"- {label} vs {other}: " + (f"**MAE {d.verdict()}** ({span})" if d.finding else f"within noise ({span})"))
    if not lines:
        return []
    return ["Findings: a difference in MAE is stated only where its bootstrap interval over the test series excludes "
            "zero (table3_differences):", ""] + lines + [""]


def split_lines(study: Study) -> list[str]:
    """summary.md's statement of which systems each number comes from (SPEC §2)."""
    sizes, d = study.data.split_sizes(), study.data
    return [f"Systems: {sizes['train']} training / {sizes['validation']} validation / {sizes['test']} test, split with "
            f"seed {d.seed}. Training reads the training systems; every choice (the stage-1 grid's validation loss, "
            "stage 2's forecast error, Table 2) reads the validation systems; Table 3, its lead-time table and the "
            f"forecast plots report the test systems, which no choice has seen. Each series is cut in time: the first "
            f"{d.context_points} of {d.points} points are the context, the last {d.horizon_points} the horizon.", ""]


def code_versions(runs: Iterable[IndexEntry]) -> dict[str, list[str]]:
    """Each code version the study's runs came from (every attempt counts) -> the runs (nodes) that used it.

    A run requeued after the code changed appears under both versions. Read from each run.json's
    attempt records (lvjob.run.provenance); runs without records add nothing.
    """
    found: dict[str, list[str]] = {}
    for entry in runs:
        for label in map(_code_label, _attempt_codes(entry.run.run_dir)):
            nodes = found.setdefault(label, [])
            if entry.node not in nodes:
                nodes.append(entry.node)
    return found


def _attempt_codes(run_dir: str | None) -> list[dict]:
    try:
        status = json.loads((Path(run_dir) / "run.json").read_text()) if run_dir else {}
    except (OSError, json.JSONDecodeError):
        return []
    return [record.get("code") or {} for record in status.get("attempt_records", [])]


def _code_label(code: dict) -> str:
    if not code.get("commit"):
        return "an unknown code version (not run from a git checkout)"
    return f"commit `{code['commit'][:12]}`" + (" with uncommitted changes" if code.get("dirty") else "")


def code_lines(versions: dict[str, list[str]]) -> list[str]:
    """summary.md's lines on the code the numbers came from; a plain warning when it is more than one version."""
    if len(versions) == 1:
        return [f"Code: every run came from {next(iter(versions))}.", ""]
    if not versions:
        return []
    lines = [f"**Code: the runs came from {len(versions)} different code versions**, so their numbers may not be "
             "comparable:", ""]
    return lines + [f"- {label}: {', '.join(nodes)}" for label, nodes in versions.items()] + [""]


def write_results(study: Study, profile: Profile, log=print) -> Path:
    """Every table in three formats, summary.md, then the run index; returns the study's results folder, which
    the profile's `results_dir` then links to.

    The index goes first and comes back last: `submit` takes results with a complete index as done,
    so a kill between two files leaves no index, and the next submit writes them all again.
    """
    out = study_results(study, profile)
    index = run_index(study, profile)
    out.index.unlink(missing_ok=True)
    tables = study_tables(study, index)
    for table in tables:
        for suffix, render in ((".md", to_markdown), (".csv", to_csv), (".tex", to_latex)):
            atomic.write_text(out.table(table.name, suffix), render(table))
    atomic.write_text(out.summary, summary(study, index, tables))
    atomic.write_text(out.index, json.dumps(index.to_json(), indent=1))
    show_as_latest(profile.results_dir, out.root, log)
    return out.root


def show_as_latest(results_dir: str, folder: Path, log=print) -> None:
    """Point `results_dir` at a study's results `folder`."""
    make_way(results_dir, log)
    atomic.point(results_dir, folder)


def make_way(results_dir: str, log=print) -> None:
    """Before `results_dir` becomes a link: a real folder there (an older lvjob's results) is moved beside the
    studies' folders, nothing in it lost, and an empty one is removed; a file, or a link lvjob did not make, is an
    error (`results_problem`)."""
    link = Path(results_dir)
    if problem := results_problem(link):
        raise NotADirectoryError(problem)
    if made_by_lvjob(link) or not link.exists():
        return
    if not any(link.iterdir()):
        link.rmdir()
        return
    kept = results_variants(link) / f"unkeyed-{utc_compact()}-{os.getpid()}"
    kept.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):  # another aggregate moved it first
        link.rename(kept)
        log(f"{link} was a folder, not a link to a study's results (an older lvjob's?): moved to {kept}")


def results_problem(link: Path) -> str | None:
    """What stops `results_dir` from becoming lvjob's link to the latest results, in words; None if nothing."""
    if link.is_symlink() and not made_by_lvjob(link):
        return (f"results_dir: {link} is a link to {os.readlink(link)}, which lvjob did not make; valid: that folder "
                f"itself as results_dir (lvjob keeps results_dir as a link to the study aggregated last)")
    if link.exists() and not link.is_dir():
        return f"results_dir: {link} is a file; valid: a folder, or a path not there yet"
    return None
