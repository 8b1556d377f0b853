"""Speed, time left and compute hours from a run's own records (what `lvjob status` shows)."""

from datetime import datetime, timezone

from lvjob.run.throughput import device_kind, duration, eta_seconds, held_seconds, steps_per_second


def rows(attempt: int, steps: range, seconds_per_step: float, start: float = 0.0) -> list[dict]:
    return [{"step": s, "attempt": attempt, "elapsed": start + i * seconds_per_step} for i, s in enumerate(steps)]


def test_speed_is_steps_per_second_over_the_last_rows_of_the_newest_attempt():
    history = rows(1, range(1, 31), 2.0) + rows(2, range(21, 41), 0.5, start=30.0)  # requeued at 20: faster node
    assert steps_per_second(history) == 2.0


def test_speed_uses_only_the_last_window_of_rows():
    history = rows(1, range(1, 11), 1.0) + [{"step": 10 + i, "attempt": 1, "elapsed": 9 + 0.25 * i} for i in range(1, 21)]
    assert steps_per_second(history, window=10) == 4.0


def test_no_speed_before_two_timed_rows():
    assert steps_per_second([]) is None
    assert steps_per_second(rows(1, range(1, 2), 1.0)) is None
    assert steps_per_second([{"step": 1, "attempt": 1}, {"step": 2, "attempt": 1}]) is None  # rows from before timings


def test_time_left_is_the_remaining_steps_at_the_speed():
    assert eta_seconds(100, 500, 2.0) == 200.0
    assert eta_seconds(500, 500, 2.0) == 0.0
    assert eta_seconds(10, 500, None) is None


def test_held_time_adds_every_attempt_and_counts_a_running_one_until_now():
    now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    records = [{"started": "2026-11-26T10:00:00.000+00:00", "ended": "2026-11-26T10:30:00.000+00:00"},
               {"started": "2026-11-26T11:00:00.000+00:00"}]  # still running (or killed without an end)
    assert held_seconds(records, now) == 1800 + 3600


def test_hours_are_gpu_hours_when_an_attempt_ran_on_cuda():
    assert device_kind([{"device": "cpu"}, {"device": "cuda"}]) == "GPU"
    assert device_kind([{"device": "cpu"}]) == "CPU"


def test_durations_read_as_hours_minutes_or_seconds():
    assert [duration(s) for s in (None, 12, 250, 3900)] == ["-", "12s", "4m10s", "1h05m"]
