"""The host side of a cluster job: run the runner as a child process, hand it the cluster's signals, watch it.

SLURM starts the job's process on the host. That process starts the runner as a child (inside the
image, `apptainer exec ... python -m lvjob run ...`, or the project's own Python without one),
forwards SIGUSR2 and SIGTERM to it, and waits. The child checkpoints and exits with its "stopped on
request" code; the host process, which has SLURM's client and config at hand, then asks for the
requeue (lvjob.orchestrate.tasks). So the image needs no SLURM client, and both paths are one code path.

Signals, exactly once and never too early: given a `ready` file, the child starts with both signals
ignored (a copy SLURM sends the whole step cannot kill it), and the supervisor holds what it
receives until the child writes that file once its own handler is in place (lvjob.core.stops); then
it forwards each held signal once, and every later one as it comes.

Hangs: given a `Watchdog`, a child whose heartbeat (lvjob.core.heartbeat) has been silent past its
limit gets its Python stacks dumped into its log (SIGUSR1: faulthandler, which works while the
process is blocked in C), then is killed; the job ends as a crash, which the study's retry policy retries.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lvjob.cluster.children import die_with_parent
from lvjob.core.heartbeat import StallRule, read_pulse
from lvjob.core.stops import READY_FILE, STOP_SIGNALS

FORWARDED = STOP_SIGNALS
DUMP_STACKS = signal.SIGUSR1  # the runner's faulthandler writes every thread's stack to its stderr on this
POLL_S = 0.1
DUMP_GRACE_S = 3.0  # for the stacks to reach the log before the kill


@dataclass
class Ended:
    """How the child ended: its exit code (negative: killed by that signal), the signals forwarded to it,
    and, if the watchdog killed it, how long it had been silent."""

    code: int
    signals: list[int] = field(default_factory=list)
    stalled_s: float | None = None

    def stopped_by(self, signum: int) -> bool:
        return signum in self.signals


@dataclass(frozen=True)
class Watchdog:
    heartbeat: Path
    rule: StallRule = StallRule()


class _Forwarder:
    """Signal handler: passes each signal on to the child, or holds it until the child can take it."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.ready = False
        self.received: list[int] = []
        self.held: list[int] = []

    def __call__(self, signum, frame) -> None:
        self.received.append(signum)
        if self.ready:
            self._deliver(signum)
        else:
            self.held.append(signum)

    def start(self, proc: subprocess.Popen, ready: bool) -> None:
        self.proc = proc
        if ready:
            self.now_ready()

    def now_ready(self) -> None:
        self.ready = True
        held, self.held = self.held, []
        for signum in held:
            self._deliver(signum)

    def _deliver(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)


@contextmanager
def _handlers(handler):
    previous = {s: signal.signal(s, handler) for s in FORWARDED}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _ignore_stop_signals() -> None:
    """In the child, before exec: both ignored until its own handler replaces that (lvjob.core.stops); and it
    dies with its supervisor (a runner nobody watches must not go on)."""
    die_with_parent()
    for s in FORWARDED:
        signal.signal(s, signal.SIG_IGN)


def supervise(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
              ready: Path | None = None, watchdog: Watchdog | None = None) -> Ended:
    """Run `argv` (a list, never a shell string) as a child, forwarding USR2/TERM to it, until it ends.

    `ready`: a file the child writes once it handles the signals (its path goes to the child as
    LVJOB_READY_FILE in `env`); until then signals are held. Without it they are forwarded at once.
    """
    forward = _Forwarder()
    if ready is not None:
        ready.unlink(missing_ok=True)
        env = (dict(os.environ) if env is None else env) | {READY_FILE: str(ready)}
    # Handlers first: a signal in the instant before the child exists is held, not fatal to the host.
    with _handlers(forward):
        started = time.time()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, preexec_fn=_ignore_stop_signals if ready else None)
        forward.start(proc, ready=ready is None)
        while (code := _wait(proc, POLL_S)) is None:
            if not forward.ready and ready.exists():
                forward.now_ready()
            if watchdog is not None and (silent := _stalled(watchdog, started)) is not None:
                _dump_and_kill(proc, silent, watchdog)
                return Ended(proc.wait(), forward.received, silent)
    return Ended(code, forward.received)


def _wait(proc: subprocess.Popen, seconds: float) -> int | None:
    try:
        return proc.wait(timeout=seconds)  # a signal runs the handler and the wait goes on (PEP 475)
    except subprocess.TimeoutExpired:
        return None


def _stalled(watchdog: Watchdog, started: float) -> float | None:
    """Seconds of silence if past the limit, else None."""
    pulse = read_pulse(watchdog.heartbeat, since=started)
    return pulse.silent_s if pulse.silent_s > watchdog.rule.limit(pulse.longest_gap_s) else None


def _dump_and_kill(proc: subprocess.Popen, silent: float, watchdog: Watchdog) -> None:
    pulse = read_pulse(watchdog.heartbeat)
    print(f"watchdog: the run has been silent for {silent:.0f} s (limit {watchdog.rule.limit(pulse.longest_gap_s):.0f} s; "
          f"last: {pulse.what or 'nothing yet'}): its stacks go to its log, then it is killed", file=sys.stderr, flush=True)
    proc.send_signal(DUMP_STACKS)
    try:
        proc.wait(timeout=DUMP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
