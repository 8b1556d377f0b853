"""Every executor's backend is the written `Backend` interface, member for member, and nothing the
orchestration calls lies outside it."""

import inspect
import time
import re
from pathlib import Path

import pytest

from lvjob.cluster import executors
from lvjob.cluster.executors import BACKENDS, Backend

ORCHESTRATE = Path(executors.__file__).parents[1] / "orchestrate"
MEMBERS = {n for n in vars(Backend) if not n.startswith("_")} | set(Backend.__annotations__)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_backend_has_every_member_of_the_interface_with_its_signature(name):
    cls = BACKENDS[name]
    for member in MEMBERS:
        assert hasattr(cls, member), f"{cls.__name__} lacks {member}"
        if callable(getattr(Backend, member, None)):
            assert inspect.signature(getattr(cls, member)).parameters.keys() == \
                inspect.signature(getattr(Backend, member)).parameters.keys(), member


def test_the_orchestration_calls_only_members_of_the_interface_on_a_backend():
    called = {m for f in ORCHESTRATE.glob("*.py") for m in re.findall(r"backend(?:\(\))?\.(\w+)", f.read_text())}
    assert called and called <= MEMBERS, called - MEMBERS


class Waiter:
    """A job that says it started, then waits for a stop signal, which it writes down (in the child process)."""

    def __init__(self, folder: Path, name: str):
        self.folder, self.name = folder, name

    def __call__(self) -> None:
        import signal
        import sys
        import time

        signal.signal(signal.SIGUSR2, lambda s, f: ((self.folder / f"{self.name}.stopped").write_text(""), sys.exit(3)))
        (self.folder / f"{self.name}.started").write_text("")
        time.sleep(60)


def test_a_stop_signal_reaches_the_running_local_jobs_and_no_other_starts(tmp_path, monkeypatch):
    import os
    import signal
    import threading

    from lvjob.cluster.profile import Profile

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(executors.LocalBackend, "FORWARD_EVERY_S", 0.2)
    local = executors.LocalBackend(Profile(max_parallel=1))
    jobs = [Waiter(tmp_path, "first"), Waiter(tmp_path, "second")]

    def stop_once_started() -> None:
        while not (tmp_path / "first.started").exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR2)  # as SLURM signals the packed job's host

    threading.Thread(target=stop_once_started, daemon=True).start()
    with pytest.raises(executors.Stopped, match="SIGUSR2"):
        local.submit_wave(tmp_path / "jobs", [executors.Batch("stage", jobs, [])], lambda *a: None, print)
    assert (tmp_path / "first.stopped").exists() and not (tmp_path / "second.started").exists()
