"""The FLOP ledger: every lost step counted exactly once, whatever the kills."""

from lvjob.run.ledger import Losses, losses, record_resume, training_ledger
from lvjob.core.paths import RunDir


def rows(*steps, attempt=1, val=()):
    return [{"step": s, "loss": 1.0, "attempt": attempt} | ({"val_loss": 1.0} if s in val else {}) for s in steps]


def test_repeated_records_of_the_same_lost_steps_count_once(tmp_path):
    # A kill between recording and cutting the metrics file back repeats the records.
    record_resume(tmp_path, 2, 4, rows(5, 6, val=(6,)))
    record_resume(tmp_path, 3, 4, rows(5, 6, val=(6,)))
    assert losses(tmp_path) == Losses(steps=2, validations=1, resumes=2)


def test_the_same_step_lost_by_two_attempts_counts_twice(tmp_path):
    record_resume(tmp_path, 2, 4, rows(5, 6, attempt=1))
    record_resume(tmp_path, 3, 4, rows(5, 6, 7, attempt=2))
    assert losses(tmp_path).steps == 5


def test_a_record_cut_short_by_a_kill_is_ignored(tmp_path):
    record_resume(tmp_path, 2, 4, rows(5))
    with open(RunDir(tmp_path).preemptions, "a") as f:
        f.write('{"event": "lost", "attem')
    assert losses(tmp_path) == Losses(steps=1, validations=0, resumes=1)


def test_training_ledger_charges_kept_and_lost_work():
    ledger = training_ledger(rows(1, 2, 3, 4, val=(2, 4)), Losses(steps=2, validations=1, resumes=1), step_flops=10, val_flops=3)
    assert (ledger.train_steps, ledger.train, ledger.validation) == (6, 60, 9)
    assert ledger.lost_to_preemption == 2 * 10 + 3 and ledger.total == 69


def test_evaluation_batches_lost_over_several_cut_off_attempts_count_once_each(tmp_path):
    from lvjob.data.dataset import DataSpec
    from lvjob.run import cost
    from lvjob.run.evaluate import booking
    from lvjob.run.job import Job
    from lvjob.run.ledger import Ledger

    job = Job(kind="evaluate", model="tiny", data=DataSpec(systems=20, points=30, val_fraction=0.2), series=4, eval_batch_size=1)
    b = [(1, 90, 40, 13, 1)] * 4  # four equal batches
    one = sum(cost.evaluation_flops(job, b[:1], 0))
    path, ledger = tmp_path / "ledger.json", Ledger()
    book = booking(job, ledger, 0, path)
    book(b[0]), book(b[1])  # batch 0 written, batch 1 computed, then killed before it was written
    book = booking(job, Ledger.read(path), 0, path, kept=b[:1])
    book(b[1]), book(b[2])  # batch 1 written this time, batch 2 computed, killed again
    ledger = Ledger.read(path)
    booking(job, ledger, 0, path, kept=b[:2])
    assert Ledger.read(path).lost_to_preemption == 2 * one  # batch 1's first try and batch 2's: once each
    assert ledger.prompt + ledger.generation == 4 * one  # the four batches computed stay spent
