"""Writes a reader never sees half of (lvjob.core.atomic)."""

from concurrent.futures import ProcessPoolExecutor

from lvjob.core import atomic


def _create(args) -> bool:
    path, text = args
    return atomic.create_once(path, text)


def test_of_several_processes_creating_one_file_the_first_wins_and_the_file_is_whole(tmp_path):
    path = tmp_path / "choices" / "stage2.json"
    texts = [f"writer {i} " * 2000 for i in range(8)]
    with ProcessPoolExecutor(4) as pool:
        won = list(pool.map(_create, [(path, t) for t in texts]))
    assert won.count(True) == 1
    assert path.read_text() == texts[won.index(True)]
    assert [p.name for p in path.parent.iterdir()] == ["stage2.json"]  # no temporary file left behind


def _append(args) -> None:
    path, writer = args
    for i in range(25):  # rows of ~10 kB: more than one page, so a write is never trivially atomic
        atomic.append_jsonl(path, [{"writer": writer, "row": i, "pad": "x" * 10_000}])


def test_concurrent_appends_from_several_processes_lose_no_line_and_tear_none(tmp_path):
    path = tmp_path / "submissions.jsonl"
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(_append, [(path, w) for w in range(4)]))
    rows = atomic.read_jsonl(path)
    assert sorted((r["writer"], r["row"]) for r in rows) == [(w, i) for w in range(4) for i in range(25)]
    assert len(path.read_text().splitlines()) == 100


def test_an_append_after_a_line_cut_short_starts_on_a_line_of_its_own(tmp_path):
    path = tmp_path / "retries.jsonl"
    path.write_text('{"node": "a"}\n{"node": "b", "cut sh')
    atomic.append_jsonl(path, [{"node": "c"}])
    assert atomic.read_jsonl(path) == [{"node": "a"}, {"node": "c"}]
