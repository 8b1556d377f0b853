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
