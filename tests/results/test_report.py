"""The aggregator's tables from run directories in every state, checked against hand-computed values."""

import math

import pytest

from lvjob.results.aggregate import write_results
from lvjob.results.index import run_index
from lvjob.study.plan import plan_study
from lvjob.results.report import comparison_table, context_table, flops_table, grid_table, lead_time_table
from lvjob.study.choices import study_nodes
from lvjob.results.tables import Mark, Table, to_csv, to_latex, to_markdown


def cells(table: Table, first: str) -> tuple:
    return next(row for row in table.rows if row[0] == first)[1:]


def labels(study):
    return {n.key: n.label for n in study_nodes(study) if n.label}


def test_table3_has_a_row_per_model_and_baseline_and_a_column_per_score(study_runs):
    study, profile = study_runs
    t = comparison_table(run_index(study, profile), labels(study))
    assert [row[0] for row in t.rows] == ["zero-shot, plain prompt", "zero-shot, instruct prompt", "default fine-tune",
                                          "best fine-tune (final run)", "persistence (last point repeated)",
                                          "statistical: AR(p), p by AIC", "physics: Lotka-Volterra fit"]
    assert t.columns == ("model", "MAE", "MSE", "RMSE", "MASE", "CRPS", "coverage 10-90%", "parse rate", "samples", "series")


def test_table3_puts_finished_runs_beside_marked_missing_ones(study_runs):
    study, profile = study_runs
    t = comparison_table(run_index(study, profile), labels(study))
    assert cells(t, "zero-shot, plain prompt") == (2.0, 5.0, math.sqrt(5.0), 4.0, 1.0, 0.5, 1.0, 5, 20)
    assert cells(t, "zero-shot, instruct prompt") == (Mark("missing: failed"),) * 9
    assert cells(t, "default fine-tune")[0] == Mark(f"missing: running, step 12/{study.default.steps}")
    assert cells(t, "best fine-tune (final run)")[0] == Mark("missing: not started")
    assert cells(t, "persistence (last point repeated)")[0] == Mark("missing: not started")


def test_table3_says_the_test_split_and_gives_a_baseline_no_parse_rate(study_runs):
    study, profile = study_runs
    t = comparison_table(run_index(study, profile), labels(study))
    assert "test systems" in t.title
    assert cells(t, "physics: Lotka-Volterra fit")[5:] == (Mark("-"), Mark("-"), 1, 20)  # one sample: no interval either


def test_lead_time_table_has_each_rows_mae_per_forecast_step(study_runs):
    study, profile = study_runs
    t = lead_time_table(run_index(study, profile), labels(study))
    assert t.columns == ("model", "step 1", "step 2")
    assert cells(t, "zero-shot, plain prompt") == (0.1, 0.2)
    assert cells(t, "zero-shot, instruct prompt") == (Mark("missing: failed"),) * 2


def test_table4_sums_spent_and_lost_flops_of_every_run_finished_or_not(study_runs):
    study, profile = study_runs
    planned = plan_study(study).by_experiment()
    t = flops_table(run_index(study, profile), planned, study.budget_flops)
    assert cells(t, "zero-shot") == ("1/2", 120, planned["zero-shot"], 0, 120 / planned["zero-shot"])
    assert cells(t, "default")[:4] == ("0/1", 12000, planned["default"], 0)  # the running run's FLOPs so far
    assert cells(t, "stage1")[:4] == ("8/9", 8 * 2000 + 300, planned["stage1"], 300)
    assert cells(t, "stage2")[:4] == ("1/3", 700 + 350, planned["stage2"], 40)
    assert cells(t, "final")[:4] == ("0/1", 0, planned["final"], 0)
    spent = 120 + 12000 + 16300 + 1050
    assert cells(t, "baselines")[:4] == ("1/3", 0, 0, 0)
    assert cells(t, "total") == ("11/19", spent, sum(planned.values()), 340, spent / sum(planned.values()))
    assert cells(t, "budget")[-1] == spent / 1e17


def test_stage1_grid_has_each_validation_loss_in_its_cell(study_runs):
    study, profile = study_runs
    t = grid_table(run_index(study, profile))
    assert t.columns == ("rank", "lr 0.1", "lr 0.01", "lr 0.001")
    assert cells(t, 2) == pytest.approx((3.0, 2.9, 2.8))
    assert cells(t, 8)[:2] == pytest.approx((2.4, 2.3)) and cells(t, 8)[2] == Mark("missing: not started")
    assert "rank 8, lr 0.01" in t.notes[0]


def test_table2_lists_every_context_of_stage2(study_runs):
    study, profile = study_runs
    t = context_table(run_index(study, profile))
    assert [row[0] for row in t.rows] == [64, 128, 256]
    assert cells(t, 64) == (8, 1e-2, 0.9, 1.2, math.sqrt(1.2), 1.0)
    assert cells(t, 128)[2] == Mark("missing: preempted, step 5/20")


def test_each_table_is_written_in_three_formats_and_a_second_run_gives_the_same_files(study_runs):
    study, profile = study_runs
    out = write_results(study, profile)
    names = ["table1_step_flops", "table2_context_length", "table3_forecast_error", "table3_differences",
             "table3_lead_time", "table4_flops", "stage1_grid", "choices"]
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([f"{n}.{ext}" for n in names for ext in ("md", "csv", "tex")] + ["runs.json", "summary.md"])
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    write_results(study, profile)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    text = (out / "summary.md").read_text()
    assert "missing: failed" in text and "tiny demo model" in text and "Runs complete: 11 of 19" in text
    assert "Table 3, its lead-time table" in text and "800 training / 100 validation / 100 test" in text


def test_formats_keep_marks_and_escape_latex():
    t = Table("t", "A_b 100%", ("name", "value"), (("x_1", 0.5), ("y", Mark("missing: failed"))), formats=("", ".1%"))
    assert "| y | missing: failed |" in to_markdown(t) and "| x_1 | 50.0% |" in to_markdown(t)
    assert to_csv(t).splitlines() == ["name,value", "x_1,0.5", "y,missing: failed"]
    tex = to_latex(t)
    assert r"\caption{A\_b 100\%}" in tex and r"x\_1 & 50.0\% \\" in tex and r"\toprule" in tex


def test_table3_says_how_many_series_each_baseline_fell_back_on_and_how_far_the_physics_fit_is(study_runs):
    study, profile = study_runs
    notes = comparison_table(run_index(study, profile), labels(study)).notes
    assert "physics: Lotka-Volterra fit: 1 of 20 series fell back to persistence (fit failed); median RMS residual of the fit on the contexts 0.12 of their mean population." in notes
