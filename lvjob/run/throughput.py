"""How fast a run goes and when it will be done, from its own records: pure functions, no files.

Metrics rows carry `attempt` and `elapsed` (seconds since their attempt began): the speed is the
steps per second over the last rows of the newest attempt (a requeue's gap and start-up are not
counted against it). Attempt records (run.json's `attempt_records`) carry UTC `started` and `ended`:
their sum is the compute time the run has held a device for.
"""

from __future__ import annotations

from datetime import datetime, timezone

from lvjob.core.timestamps import parse_utc

WINDOW = 20  # rows: the last 20 steps, or fewer at the start of an attempt


def steps_per_second(rows: list[dict], window: int = WINDOW) -> float | None:
    """Steps per second over the last `window` rows of the newest attempt; None until two rows have timings."""
    timed = [r for r in rows if r.get("elapsed") is not None]
    if not timed:
        return None
    newest = [r for r in timed if r.get("attempt") == timed[-1].get("attempt")][-window:]
    if len(newest) < 2 or newest[-1]["elapsed"] <= newest[0]["elapsed"]:
        return None
    return (newest[-1]["step"] - newest[0]["step"]) / (newest[-1]["elapsed"] - newest[0]["elapsed"])


def eta_seconds(step: int, steps: int, rate: float | None) -> float | None:
    """Seconds until step `steps` at `rate` steps per second (None without a rate)."""
    if rate is None or rate <= 0:
        return None
    return max(steps - step, 0) / rate


def held_seconds(records: list[dict], now: datetime | None = None) -> float:
    """Seconds the attempts held their device: ended - started, or now - started for one still running."""
    now = now or datetime.now(timezone.utc)
    total = 0.0
    for record in records:
        if record.get("started"):
            end = parse_utc(record["ended"]) if record.get("ended") else now
            total += max((end - parse_utc(record["started"])).total_seconds(), 0.0)
    return total


def device_kind(records: list[dict]) -> str:
    """GPU if any attempt ran on CUDA, else CPU: what the hours are hours of."""
    return "GPU" if any(str(r.get("device", "")).startswith("cuda") for r in records) else "CPU"


def duration(seconds: float | None) -> str:
    """`1h05m`, `4m10s`, `12s`; `-` for none."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
