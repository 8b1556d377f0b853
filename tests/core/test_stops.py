"""The process's stop request (lvjob.core.stops): caught, never fatal, for a job; the default actions for the rest."""

import signal
import subprocess
import sys

CHILD = "from lvjob.core import stops; import os, signal; stops.install(); {then}"


def _child(then: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD.format(then=then)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_a_stop_signal_after_install_is_recorded_not_fatal():
    out = _child("os.kill(os.getpid(), signal.SIGUSR2); os.kill(os.getpid(), signal.SIGTERM); "
                 "print(stops.REQUEST.name, len(stops.REQUEST.signals))")
    assert (out.returncode, out.stdout.split()) == (0, ["SIGUSR2", "2"])


def test_a_command_that_is_not_a_job_gets_the_default_action_for_a_signal_that_came_before_release():
    out = _child("os.kill(os.getpid(), signal.SIGTERM); stops.release(); print('not reached')")
    assert out.returncode == -signal.SIGTERM and "not reached" not in out.stdout


def test_install_tells_the_supervisor_through_the_ready_file_and_hides_it_from_the_childs_children(tmp_path):
    ready = tmp_path / "ready"
    out = _child("print(os.environ.get('LVJOB_READY_FILE'))", LVJOB_READY_FILE=str(ready))
    assert out.returncode == 0 and out.stdout.strip() == "None" and ready.read_text().isdigit()


def test_after_the_outcome_a_stop_signal_cannot_kill_the_shut_down():
    out = _child("stops.ignore(); os.kill(os.getpid(), signal.SIGUSR2); print('ended')")
    assert out.returncode == 0 and out.stdout.strip() == "ended"
