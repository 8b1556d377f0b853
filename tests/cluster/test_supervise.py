"""The host-side supervisor: the runner runs as a child; the cluster's signals reach it through the host process."""

import os
import signal
import sys
import threading
import time

from lvjob.cluster.supervise import supervise

# Exits 3 when it gets USR2 (as the runner does after its checkpoint); says when its handler is in place.
CHILD = """
import signal, sys, time, pathlib
signal.signal(signal.SIGUSR2, lambda s, f: sys.exit(3))
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(7))
pathlib.Path(sys.argv[1]).write_text("ready")
time.sleep(60)
sys.exit(0)
"""


def _signal_when_ready(flag, signum: int) -> threading.Thread:
    def send():
        deadline = time.time() + 30
        while not flag.exists() and time.time() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_the_childs_exit_code_is_returned():
    assert supervise([sys.executable, "-c", "import sys; sys.exit(5)"]).code == 5


def test_usr2_to_the_host_process_reaches_the_child_which_checkpoints_and_exits(tmp_path):
    _signal_when_ready(tmp_path / "ready", signal.SIGUSR2)
    ended = supervise([sys.executable, "-c", CHILD, str(tmp_path / "ready")])
    assert ended.code == 3 and ended.stopped_by(signal.SIGUSR2)


def test_term_is_forwarded_too(tmp_path):
    _signal_when_ready(tmp_path / "ready", signal.SIGTERM)
    ended = supervise([sys.executable, "-c", CHILD, str(tmp_path / "ready")])
    assert ended.code == 7 and ended.signals == [signal.SIGTERM]


def test_the_host_processs_own_handlers_are_back_afterwards():
    before = signal.getsignal(signal.SIGUSR2)
    supervise([sys.executable, "-c", "pass"])
    assert signal.getsignal(signal.SIGUSR2) is before


def test_the_child_gets_exactly_the_environment_it_is_given():
    code = "import os, sys; sys.exit(0 if os.environ.get('ONLY') == '1' and 'HOME' not in os.environ else 9)"
    assert supervise([sys.executable, "-c", code], env={"ONLY": "1"}).code == 0
