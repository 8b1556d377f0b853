"""summary.md names the code versions (git commits) the study's numbers came from, plainly when several."""

import json
from pathlib import Path

from helpers import index_entry
from lvjob.results.aggregate import code_lines, code_versions, write_results
from lvjob.results.index import IndexEntry

A, B = "a" * 40, "b" * 40


def _run(tmp_path: Path, node: str, *codes: dict) -> IndexEntry:
    run_dir = tmp_path / node
    run_dir.mkdir()
    records = [{"attempt": i + 1, "code": code} for i, code in enumerate(codes)]
    (run_dir / "run.json").write_text(json.dumps({"status": "complete", "attempt_records": records}))
    return index_entry(node, str(run_dir))


def test_runs_from_one_commit_are_summarised_in_one_line(tmp_path):
    runs = [_run(tmp_path, "x", {"commit": A, "dirty": False}), _run(tmp_path, "y", {"commit": A, "dirty": False})]
    assert code_lines(code_versions(runs)) == [f"Code: every run came from commit `{A[:12]}`.", ""]


def test_runs_from_different_commits_are_flagged_with_the_runs_of_each(tmp_path):
    runs = [_run(tmp_path, "x", {"commit": A, "dirty": False}), _run(tmp_path, "y", {"commit": B, "dirty": False})]
    lines = code_lines(code_versions(runs))
    assert "2 different code versions" in lines[0] and "not be comparable" in lines[0]
    assert lines[2:4] == [f"- commit `{A[:12]}`: x", f"- commit `{B[:12]}`: y"]


def test_a_run_requeued_onto_new_code_counts_under_both_versions(tmp_path):
    runs = [_run(tmp_path, "x", {"commit": A, "dirty": False}, {"commit": B, "dirty": False})]
    assert code_versions(runs) == {f"commit `{A[:12]}`": ["x"], f"commit `{B[:12]}`": ["x"]}


def test_uncommitted_changes_are_a_version_of_their_own(tmp_path):
    runs = [_run(tmp_path, "x", {"commit": A, "dirty": False}), _run(tmp_path, "y", {"commit": A, "dirty": True})]
    assert list(code_versions(runs)) == [f"commit `{A[:12]}`", f"commit `{A[:12]}` with uncommitted changes"]


def test_code_outside_git_is_named_unknown(tmp_path):
    runs = [_run(tmp_path, "x", {"commit": None, "dirty": None})]
    assert code_lines(code_versions(runs))[0] == "Code: every run came from an unknown code version (not run from a git checkout)."


def test_runs_without_records_add_no_version(tmp_path):
    runs = [index_entry("never", None, "missing"), index_entry("old", str(tmp_path / "missing"))]
    assert code_versions(runs) == {} and code_lines({}) == []


def test_summary_md_says_when_the_studys_runs_came_from_different_commits(study_runs):  # noqa: F811
    study, profile = study_runs
    for i, run_json in enumerate(sorted(Path(profile.runs_root).rglob("run.json"))):
        status = json.loads(run_json.read_text())
        run_json.write_text(json.dumps(status | {"attempt_records": [{"code": {"commit": A if i else B, "dirty": False}}]}))
    text = (write_results(study, profile) / "summary.md").read_text()
    assert "**Code: the runs came from 2 different code versions**" in text and f"- commit `{B[:12]}`: " in text
