"""TensorBoard event files in the run directory, read back with tensorboard's own readers.

The end-to-end test kills a real `lvjob run` between checkpoints (SIGKILL, as in test_resume) and
resumes it: the event files must then hold exactly one value per step, equal to metrics.jsonl.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from lvjob.run.tracking import TENSORBOARD_DIR, TensorBoard, row_scalars
from helpers import ROOT, TRACKING_JOB, TRACKING_STEPS, finish, start_run, wait_for_step


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar value of every event file in `folder`, raw: (step, value) per tag, nothing hidden."""
    out = defaultdict(list)
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name == "scalars":
                    out[v.tag].append((event.step, float(tensor_util.make_ndarray(v.tensor))))
    return out


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, small_data):
    """A run SIGKILLed after step 6 (checkpoint at 4), then resumed to the end."""
    tmp = tmp_path_factory.mktemp("tracking")
    job, run_dir = tmp / "job.yaml", tmp / "run"
    job.write_text(yaml.safe_dump(dict(TRACKING_JOB, data={"path": str(small_data), "systems": 20, "points": 30})))
    args = ["run", str(job), f"run_dir={run_dir}", "device=cpu"]
    proc = start_run(args)
    wait_for_step(proc, run_dir, 6)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    killed = _scalars(run_dir / TENSORBOARD_DIR)
    code, out = finish(start_run(args))
    assert code == 0, out
    return run_dir, killed, out


# --- a killed and resumed run --------------------------------------------------------------------


def test_resumed_run_logs_exactly_one_loss_per_step_equal_to_the_metrics(resumed):
    run_dir, _, _ = resumed
    logged = _scalars(run_dir / TENSORBOARD_DIR)["train/loss"]
    assert [step for step, _ in logged] == list(range(1, TRACKING_STEPS + 1))
    # TensorBoard stores float32; the losses are float32 values, so they come back exactly.
    assert [value for _, value in logged] == [r["loss"] for r in _rows(run_dir)]


def test_resumed_run_logs_validation_losses_at_the_validation_steps(resumed):
    run_dir, _, _ = resumed
    val = [(r["step"], r["val_loss"]) for r in _rows(run_dir) if "val_loss" in r]
    logged = _scalars(run_dir / TENSORBOARD_DIR)["val/loss"]
    assert [s for s, _ in logged] == [s for s, _ in val] == [5, 10]
    assert [v for _, v in logged] == [float(np.float32(v)) for _, v in val]


def test_the_killed_attempt_had_logged_steps_past_its_checkpoint(resumed):
    """The case the replay exists for: without it, steps 5.. would appear twice."""
    _, killed, _ = resumed
    assert max(step for step, _ in killed["train/loss"]) >= 5


def test_every_step_logs_lr_throughput_and_flops(resumed):
    run_dir, _, _ = resumed
    scalars = _scalars(run_dir / TENSORBOARD_DIR)
    for tag in ("train/lr", "train/tokens_per_s", "flops/spent", "flops/lost_to_preemption"):
        assert [s for s, _ in scalars[tag]] == list(range(1, TRACKING_STEPS + 1)), tag
    assert all(v > 0 for _, v in scalars["train/tokens_per_s"])
    assert scalars["flops/lost_to_preemption"][-1][1] > 0  # the steps re-done after the kill


def test_evaluation_metrics_are_logged_at_the_last_step(resumed):
    run_dir, _, _ = resumed
    report = json.loads((run_dir / "eval.json").read_text())
    scalars = _scalars(run_dir / TENSORBOARD_DIR)
    assert scalars["eval/parse_rate"] == [(TRACKING_STEPS, report["parse_rate"])]
    for key in ("mae", "mse", "rmse"):
        assert scalars[f"eval/{key}"] == [(TRACKING_STEPS, float(np.float32(report["model"][key])))]


def test_hparams_view_sees_the_runs_settings_and_metrics(resumed):
    run_dir, _, _ = resumed
    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = {k: (v.string_value or v.number_value) for k, v in start.hparams.items()}
    assert hp | {"lr": round(hp["lr"], 9)} == {"kind": "train", "model": "tiny", "prompt": "plain", "rank": 2,
                                                  "lr": 1e-3, "context": 48, "steps": TRACKING_STEPS, "batch_size": 2}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/loss", "eval/mae"]


# --- the backend on its own ----------------------------------------------------------------------


def _row(step: int) -> dict:
    return {"step": step, "loss": 1.0 / step, "lr": 1e-3, "time": "2026-01-01T00:00:00.000+00:00"}


def test_a_resume_replaces_the_steps_after_the_checkpoint(tmp_path):
    first = TensorBoard(tmp_path)
    first.resume([])
    for s in range(1, 7):
        first.row(_row(s))
    first.close()
    second = TensorBoard(tmp_path)
    second.resume([_row(s) for s in range(1, 5)])
    for s in range(5, 9):
        second.row(_row(s) | {"loss": 10.0 + s})
    second.close()
    logged = _scalars(tmp_path)["train/loss"]
    assert [s for s, _ in logged] == list(range(1, 9))
    assert [v for _, v in logged][4:] == [15.0, 16.0, 17.0, 18.0]


def test_replayed_rows_keep_their_own_wall_time(tmp_path):
    tb = TensorBoard(tmp_path)
    tb.resume([_row(1)])
    tb.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert acc.Scalars("train/loss")[0].wall_time == 1767225600.0  # 2026-01-01T00:00:00Z


def test_a_row_without_a_value_logs_nothing_for_it():
    assert row_scalars({"step": 3, "loss": 0.5, "val_loss": None}) == {"train/loss": 0.5}


# --- time and provenance in the records of the same run ----------------------------------------------


def test_every_metrics_row_carries_its_utc_time_and_seconds_since_its_attempt_began(resumed):
    run_dir, _, _ = resumed
    rows = _rows(run_dir)
    times = [datetime.fromisoformat(r["time"]) for r in rows]
    assert all(t.utcoffset() == timedelta(0) for t in times) and times == sorted(times)
    resumed_rows = [r for r in rows if r["attempt"] == 2]
    assert 0 < resumed_rows[0]["elapsed"] <= resumed_rows[-1]["elapsed"] < 300  # restarted with the attempt


def test_run_json_keeps_one_record_per_attempt_with_where_and_what_it_ran(resumed):
    run_dir, _, _ = resumed
    status = json.loads((run_dir / "run.json").read_text())
    killed, last = status["attempt_records"]
    assert status["attempts"] == 2 and status["status"] == "complete"  # the keys other code reads are kept
    assert [killed["attempt"], last["attempt"]] == [1, 2] and "ended" not in killed  # SIGKILL: no end written
    assert last["status"] == "complete" and last["peak_memory_bytes"] > 10**6 and last["device"] == "cpu"
    assert last["host"] == socket.gethostname() and last["slurm_job_id"] == os.environ.get("SLURM_JOB_ID")
    assert last["versions"]["torch"] and last["device_name"]


def test_run_json_names_the_codes_commit(resumed):
    run_dir, _, _ = resumed
    code = json.loads((run_dir / "run.json").read_text())["attempt_records"][-1]["code"]
    repo = ROOT
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert code["commit"] == head and isinstance(code["dirty"], bool)


def test_the_runs_log_lines_carry_utc_time_and_the_run_id(resumed):
    run_dir, _, out = resumed
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    lines = [line for line in out.splitlines() if "resuming from step-0000004" in line]
    assert len(lines) == 1 and re.match(rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z \[{run_id}\] resuming", lines[0])


def test_the_tracking_benchmark_runs_end_to_end(tmp_path):
    """benchmarks/tracking_bench.py at its smallest, so it cannot rot; no timing is asserted."""
    script = ROOT / "benchmarks" / "tracking_bench.py"
    proc = subprocess.run([sys.executable, str(script), "--steps", "13", "--reps", "1", "--context", "48", "--batch", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"^tensorboard +ms/step per run", proc.stdout, re.M) and "inside tracker.row: median" in proc.stdout
