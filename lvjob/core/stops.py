"""The process's stop request: SIGUSR2 (preemption, a time limit ahead) and SIGTERM, caught from the first line.

`python -m lvjob` and the `lvjob` script install the handler before anything heavy is imported, so a
signal in a job's first instant is a request, never the default action (death by signal 12). The
handler only records the signal; work reads `REQUEST.requested` at its safe points (between training
steps and evaluation batches, after loading) and stops there after writing what it has. A command
that is not a job puts the default actions back (`release`), re-raising what came meanwhile.

Under the supervisor (lvjob.cluster.supervise) the child starts with both signals ignored; `install`
then writes the file named by LVJOB_READY_FILE, and the supervisor forwards the cluster's signals
from that instant on (holding them until then). After a job's outcome is written, `ignore` keeps a
late signal from killing the interpreter while it shuts down (CPython puts the default actions back
for signals that have Python handlers as it finalizes).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
READY_FILE = "LVJOB_READY_FILE"  # set by the supervisor: where the child says its handler is in place


@dataclass
class StopRequest:
    """The stop signals received, in order; work stops at its next safe point once there is one."""

    signals: list[int] = field(default_factory=list)

    @property
    def requested(self) -> bool:
        return bool(self.signals)

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signals[0]).name if self.signals else None


    def check(self, where: str) -> None:
        """At a safe point: stop here if asked to (what came before `where` is written)."""
        if self.signals:
            raise Stopped(where)


class Stopped(Exception):
    """Work stopped on request at a safe point; everything before it is written. Run it again to resume."""

    def __init__(self, where: str, step: int | None = None):
        super().__init__(f"stopped on request after {where}")
        self.where, self.step = where, step


REQUEST = StopRequest()  # this process's own, filled by the handler `install` puts in place


def _record(signum, frame) -> None:
    REQUEST.signals.append(signum)  # nothing else: a handler may run inside any bytecode, even a print


def install() -> None:
    """Catch the stop signals from now on; then tell a waiting supervisor so."""
    for s in STOP_SIGNALS:
        signal.signal(s, _record)
    ready = os.environ.pop(READY_FILE, None)  # popped: the runner's own children are not the supervisor's
    if ready:
        Path(ready).write_text(str(os.getpid()))


def release() -> None:
    """Back to the default actions, for a command that is not a job; a signal that came meanwhile acts now."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    for s in REQUEST.signals:
        signal.raise_signal(s)


def ignore() -> None:
    """The job's outcome is written: a stop signal from now on, through interpreter shut-down, changes nothing."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
