"""W&B tracking, offline (WANDB_MODE=offline): a run killed and resumed stays one W&B run, each step once.

The end-to-end test kills a real `lvjob run` between checkpoints (SIGKILL, as in test_tracking) and
resumes it with `LVJOB_TRACKING=tensorboard,wandb` (what a profile's `tracking:` hands the runner).
The offline run files are read back as `wandb sync` reads them (lvjob.run.tracking.transaction_log):
each `run-<id>.wandb` file is a LevelDB-style log of W&B's own protobuf records (wandb.proto).

wandb is an optional extra: `make test` installs it (`make wandb`). Without it these tests are
skipped, saying why; under CI they fail instead, so CI cannot pass without running them.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lvjob.run import runner
from lvjob.core.config import ConfigError
from lvjob.run.job import load_job
from lvjob.core.atomic import read_jsonl
from lvjob.run.job import Job
from lvjob.run.tracking import TENSORBOARD_DIR, TRACKING_ENV, WANDB_DIR, WandB, backends_from_env, transaction_log, wandb_last_step
from helpers import TRACKING_JOB, TRACKING_STEPS, finish, wait_for_step


def _need_wandb():
    try:
        import wandb  # noqa: F401
    except ImportError:
        why = "wandb is not installed: `make wandb` adds the optional extra (make test does)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


# --- reading W&B's offline files -------------------------------------------------------------------


def _attempt_folders(run_dir: Path) -> list[Path]:
    """The offline runs of the attempts, oldest first (their names start with the UTC start time)."""
    return sorted((run_dir / WANDB_DIR).glob("offline-run-*"))


def _of(folder: Path, kind: str) -> list:
    return [getattr(r, kind) for f in folder.glob("*.wandb") for r in transaction_log(f) if r.WhichOneof("record_type") == kind]


def _history(folder: Path) -> list[tuple[int, dict]]:
    """(step, {key: value}) of every history row an attempt logged."""
    return [(h.step.num, {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in h.item})
            for h in _of(folder, "history")]


def _wait_for_rows(folder: Path, n: int, limit_s: float = 20.0) -> None:
    """Once in five full suites (3 workers on 2 cores) an attempt's history was still empty when read right after
    finish(): W&B's service writes the file; give it a bounded moment. The assertions that follow are unchanged."""
    deadline = time.monotonic() + limit_s
    while len(_history(folder)) < n and time.monotonic() < deadline:
        time.sleep(0.2)


def _summary(folder: Path) -> dict:
    out = {}
    for s in _of(folder, "summary"):
        out |= {"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in s.update}
    return out


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _wandb_env(tmp: Path) -> dict[str, str]:
    """Offline, with W&B's own folders in `tmp` (never the user's home)."""
    return {"WANDB_MODE": "offline", "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
            "WANDB_CACHE_DIR": str(tmp / "wandb-cache"), "WANDB_DATA_DIR": str(tmp / "wandb-data")}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, small_data):
    """A run with W&B on, SIGKILLed once W&B holds step 5 (checkpoint at 4), then resumed to the end."""
    _need_wandb()
    tmp = tmp_path_factory.mktemp("wandb")
    job, run_dir = tmp / "job.yaml", tmp / "run"
    job.write_text(yaml.safe_dump(dict(TRACKING_JOB, name="wandb", data={"path": str(small_data), "systems": 20, "points": 30})))
    run_id = load_job(job, [f"run_dir={run_dir}"]).run_id()
    # W&B writes its file every 15 s by default; at 0.1 s the killed attempt leaves steps past its checkpoint there
    env = os.environ | _wandb_env(tmp) | {TRACKING_ENV: "tensorboard,wandb", "WANDB_X_TRANSACTION_LOG_FLUSH_INTERVAL": "0.1"}

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "lvjob", "run", str(job), f"run_dir={run_dir}", "device=cpu"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    proc = start()
    wait_for_step(proc, run_dir, 6)
    deadline = time.monotonic() + 30
    while wandb_last_step(run_dir / WANDB_DIR, run_id) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    code, out = finish(start())
    assert code == 0, out
    return run_dir, run_id


def test_a_resumed_run_writes_into_the_same_wandb_run_id(resumed):
    run_dir, run_id = resumed
    folders = _attempt_folders(run_dir)
    assert len(folders) == 2 and all(f.name.endswith(f"-{run_id}") for f in folders)  # one per attempt
    assert [[r.run_id for r in _of(f, "run")] for f in folders] == [[run_id], [run_id]]


def test_the_killed_attempt_had_logged_steps_past_its_checkpoint_to_wandb(resumed):
    """The case that matters: a resume that logged again from its checkpoint on would repeat those steps."""
    run_dir, _ = resumed
    (resume,) = [r for r in read_jsonl(run_dir / "preemptions.jsonl") if r["event"] == "resume"]
    assert max(step for step, _ in _history(_attempt_folders(run_dir)[0])) > resume["from_step"]


def test_wandb_gets_each_step_once_and_in_increasing_order_across_attempts(resumed):
    run_dir, _ = resumed
    steps = [step for folder in _attempt_folders(run_dir) for step, row in _history(folder) if "train/loss" in row]
    assert steps == list(range(1, TRACKING_STEPS + 1))


def test_wandb_losses_equal_the_metrics(resumed):
    """On CPU a resume is bit-identical, so a step W&B kept from the killed attempt has the re-done value too."""
    run_dir, _ = resumed
    logged = [row["train/loss"] for folder in _attempt_folders(run_dir) for _, row in _history(folder) if "train/loss" in row]
    assert logged == [r["loss"] for r in _rows(run_dir)]


def test_the_evaluation_goes_to_the_summary_and_the_hyperparameters_to_the_config(resumed):
    run_dir, _ = resumed
    last = _attempt_folders(run_dir)[-1]
    report = json.loads((run_dir / "eval.json").read_text())
    assert _summary(last)["eval/mae"] == report["model"]["mae"] and _summary(last)["eval/parse_rate"] == report["parse_rate"]
    config = {}
    for c in _of(last, "config"):
        config |= {u.key: json.loads(u.value_json) for u in c.update}
    assert {k: config[k] for k in ("kind", "rank", "lr", "context", "steps")} == \
        {"kind": "train", "rank": 2, "lr": 1e-3, "context": 48, "steps": TRACKING_STEPS}


def test_tensorboard_is_still_written_beside_wandb(resumed):
    run_dir, _ = resumed
    assert list((run_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"))


# --- the backend on its own ----------------------------------------------------------------------


def _row(step: int, loss: float) -> dict:
    return {"step": step, "loss": loss, "lr": 1e-3}


def test_a_resume_logs_only_the_rows_after_the_last_step_wandb_holds(tmp_path, monkeypatch):
    _need_wandb()
    for key, value in _wandb_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    run_id = Job(kind="train", name="backend").run_id()
    first = WandB(tmp_path, run_id, {})
    first.resume([])
    for step in range(1, 7):
        first.row(_row(step, 1.0 / step))
    first.close()  # a clean end: W&B holds steps 1..6
    time.sleep(1.1)  # an attempt's folder is named by the second it starts in (a requeue takes far longer)
    second = WandB(tmp_path, run_id, {})
    second.resume([_row(step, 1.0 / step) for step in range(1, 5)])  # the checkpoint's rows, replayed
    for step in range(5, 11):
        second.row(_row(step, 10.0 + step))  # re-done, then new
    second.close()
    first_folder, second_folder = _attempt_folders(tmp_path)
    _wait_for_rows(second_folder, 4)
    assert [step for step, _ in _history(first_folder)] == [1, 2, 3, 4, 5, 6]
    assert [(step, row["train/loss"]) for step, row in _history(second_folder)] == [(s, 10.0 + s) for s in range(7, 11)]


# --- W&B asked for but not installed -----------------------------------------------------------------


def test_a_run_asking_for_wandb_without_it_fails_before_any_work_saying_how_to_install(tmp_path, small_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # how Python marks a module as absent: `import wandb` fails
    monkeypatch.setenv(TRACKING_ENV, "tensorboard,wandb")
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(dict(TRACKING_JOB, data={"path": str(small_data), "systems": 20, "points": 30})))
    job = load_job(spec, [f"run_dir={tmp_path / 'run'}", "device=cpu"])
    with pytest.raises(ConfigError, match=r"tracking: wandb .* `make wandb`"):
        runner.run(job, log=lambda m: None)
    status = runner.read_status(tmp_path / "run")
    assert status["status"] == "failed" and "pip install -e '.[wandb]'" in status["error"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock", "job.yaml", "run.json"]  # nothing else began


# --- what the runner is told -------------------------------------------------------------------------


def test_without_a_tracking_list_the_runner_tracks_with_tensorboard_alone():
    assert backends_from_env({}) == ("tensorboard",)


def test_an_unknown_backend_in_the_runners_list_is_refused_naming_the_variable_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"LVJOB_TRACKING: 'tensorboard,mlflow' names mlflow; valid: .*tensorboard, wandb"):
        backends_from_env({TRACKING_ENV: "tensorboard,mlflow"})
