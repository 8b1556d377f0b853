"""A run's heartbeat: the runner beats once per unit of work (a training step, an evaluation batch, a
chunk of a baseline's series); the supervisor's watchdog (lvjob.cluster.supervise) and `lvjob status`
read it to tell a slow run from a hung one.

The file holds the longest gap between two beats of the current attempt: a run is stalled when it
has been silent for longer than a multiple of that gap, and never sooner than a floor (loading a
model, the first step and a validation pass take longer than a step).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path



@dataclass(frozen=True)
class StallRule:
    """Silent for longer than max(floor_s, multiple x the longest gap between beats) means stalled."""

    floor_s: float = 600.0
    multiple: float = 10.0

    def limit(self, longest_gap_s: float) -> float:
        return max(self.floor_s, self.multiple * longest_gap_s)


class Heartbeat:
    """The runner's side: `beat()` after each unit of work.

    Written at most once a second, in one small write and without fsync: it costs nothing beside a
    step, and a reader that catches it half-written takes it as "no beat yet" (a floor's worth of grace).
    """

    def __init__(self, path: Path):
        self.path, self.last, self.longest, self.written = path, None, 0.0, -1.0

    def start(self) -> None:
        """The attempt began: a beat, but the time to the first unit of work (loading) is no gap."""
        self.beat("started")
        self.last, self.written = None, -1.0  # the first unit of work is written whenever it comes

    def beat(self, what: str) -> None:
        now = time.monotonic()
        gap = 0.0 if self.last is None else now - self.last
        self.last = now
        if gap > self.longest or now - self.written >= 1.0:
            self.longest, self.written = max(self.longest, gap), now
            self.path.write_text(json.dumps({"what": what, "longest_gap_s": round(self.longest, 3)}))


@dataclass(frozen=True)
class Pulse:
    """What a reader sees: seconds since the last beat (or since `since`, if later) and the longest gap so far."""

    silent_s: float
    longest_gap_s: float
    what: str | None


def read_pulse(path: Path, since: float = 0.0) -> Pulse:
    """The heartbeat at `path` as of now (wall clock); `since`: when the attempt started (time.time())."""
    try:
        mtime = os.stat(path).st_mtime
        beat = json.loads(path.read_text())
    except (OSError, ValueError):
        mtime, beat = 0.0, {}
    return Pulse(time.time() - max(mtime, since), float(beat.get("longest_gap_s", 0.0)), beat.get("what"))
