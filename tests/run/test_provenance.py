"""Time and provenance: log lines with UTC time and run id; what run.json keeps of each attempt."""

import io
import logging
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from lvjob.core import logs
from lvjob.run.provenance import code_version, peak_memory, versions

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z \[(.+?)\] (.*)$")


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    logs.configure(stream)
    yield stream
    logs.configure()


def test_a_run_log_line_carries_utc_time_and_the_run_id(log_stream):
    logs.run_log("train-abc123")("step 3/10 loss 1.0")
    when, run_id, message = LINE.match(log_stream.getvalue().strip()).groups()
    stamp = datetime.fromisoformat(when).replace(tzinfo=timezone.utc)
    assert (run_id, message) == ("train-abc123", "step 3/10 loss 1.0")
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 5  # UTC, not the local zone


def test_a_line_logged_outside_a_run_shows_a_dash_for_the_run_id(log_stream):
    logging.getLogger("lvjob.orchestrate.submission").info("submitted")
    assert LINE.match(log_stream.getvalue().strip()).group(2) == "-"


def test_configuring_logging_twice_does_not_double_lines(log_stream):
    logs.configure(log_stream)
    logs.run_log("r")("once")
    assert log_stream.getvalue().count("once") == 1


# --- the code's version ------------------------------------------------------------------------------


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A git checkout holding a package folder with a committed __init__.py."""
    _git(tmp_path, "init", "-q")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    return pkg


def test_code_version_of_a_clean_checkout_is_its_commit_and_not_dirty(checkout):
    assert code_version(checkout) == {"commit": _git(checkout, "rev-parse", "HEAD"), "dirty": False}


def test_a_changed_tracked_file_marks_the_code_dirty(checkout):
    (checkout / "__init__.py").write_text("x = 2\n")
    assert code_version(checkout)["dirty"] is True


def test_untracked_run_outputs_do_not_mark_the_code_dirty(checkout):
    (checkout.parent / "metrics.jsonl").write_text("{}\n")
    assert code_version(checkout)["dirty"] is False


def test_code_outside_a_git_checkout_has_null_version(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    assert code_version(tmp_path) == {"commit": None, "dirty": None}


def test_a_package_folder_untracked_inside_another_checkout_has_null_version(checkout):
    installed = checkout.parent / "site-packages" / "lvjob"  # e.g. a venv inside someone's repository
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    assert code_version(installed) == {"commit": None, "dirty": None}


def test_without_git_on_the_path_the_version_is_null(checkout, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert code_version(checkout) == {"commit": None, "dirty": None}


# --- libraries and memory ------------------------------------------------------------------------------


def test_versions_name_python_and_the_installed_libraries():
    v = versions()
    assert v["python"] == platform.python_version() and v["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert set(v) == {"python", "torch", "transformers", "peft", "submitit"} and all(v.values())


PEAK_AFTER_FREEING = """
import json, numpy as np, psutil
from lvjob.run.provenance import peak_memory
block = np.ones(50 * 2**20)  # 400 MiB, touched
high = psutil.Process().memory_info().rss
del block
print(json.dumps({"high": high, "now": psutil.Process().memory_info().rss, "peak": peak_memory("cpu")}))
"""


def test_peak_memory_on_the_cpu_remembers_memory_already_freed():
    # In a fresh process: a long-lived one (the test session) may keep freed memory mapped.
    import json
    import subprocess
    import sys

    out = json.loads(subprocess.run([sys.executable, "-c", PEAK_AFTER_FREEING], capture_output=True, text=True,
                                    check=True).stdout)
    high, peak = out["high"], out["peak"]
    assert out["now"] < high - 300 * 2**20  # the block is gone...
    # ...and the peak still holds it (the kernel's high-water mark lags its counters by a page or so)
    assert peak["peak_memory_of"] == "process max RSS" and peak["peak_memory_bytes"] >= high - 2**20
