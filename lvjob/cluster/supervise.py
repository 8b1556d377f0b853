"""The host side of a cluster job: run the runner as a child process and hand it the cluster's signals.

SLURM starts the job's process on the host. That process starts the runner as a child (inside the
image, `apptainer exec ... python -m lvjob run ...`, or the project's own Python without one),
forwards SIGUSR2 and SIGTERM to it, and waits. The child checkpoints and exits with its "stopped on
request" code; the host process, which has SLURM's client and config at hand, then asks for the
requeue (lvjob.orchestrate.submission). So the image needs no SLURM client, and both paths are one code path.
"""

from __future__ import annotations

import signal
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field

FORWARDED = (signal.SIGUSR2, signal.SIGTERM)


@dataclass
class Ended:
    """How the child ended: its exit code (negative: killed by that signal) and the signals forwarded to it."""

    code: int
    signals: list[int] = field(default_factory=list)

    def stopped_by(self, signum: int) -> bool:
        return signum in self.signals


class _Forwarder:
    """Signal handler: passes each signal on to the child, or holds it until the child exists."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.received: list[int] = []

    def __call__(self, signum, frame) -> None:
        self.received.append(signum)
        self._deliver(signum)

    def attach(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        for signum in self.received:  # arrived while the child was being started
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


def supervise(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Ended:
    """Run `argv` (a list, never a shell string) as a child, forwarding USR2/TERM to it, until it ends."""
    forward = _Forwarder()
    # Handlers first: a signal in the instant before the child exists is held, not fatal to the host.
    with _handlers(forward):
        proc = subprocess.Popen(argv, env=env, cwd=cwd)
        forward.attach(proc)
        code = proc.wait()  # a signal runs the handler and the wait goes on (PEP 475)
    return Ended(code, forward.received)
