"""Where the aggregate's results go: each study's own folder, and `results_dir` a link to the one written last."""

from lvjob.results.aggregate import show_as_latest


def test_a_results_folder_from_an_older_layout_is_moved_beside_the_studies_not_overwritten(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.md").write_text("older")
    study = tmp_path / "results.by-study" / "lv-study-demo-1a2b3c4d"
    study.mkdir(parents=True)
    show_as_latest(str(tmp_path / "results"), study, log=lambda _: None)
    assert (tmp_path / "results").resolve() == study.resolve()
    assert [p.read_text() for p in tmp_path.glob("results.by-study/unkeyed-*/summary.md")] == ["older"]


def test_results_dir_is_a_relative_link_so_the_project_folder_can_move(tmp_path):
    study = tmp_path / "results.by-study" / "lv-study-demo-1a2b3c4d"
    study.mkdir(parents=True)
    show_as_latest(str(tmp_path / "results"), study)
    assert (tmp_path / "results").readlink().as_posix() == "results.by-study/lv-study-demo-1a2b3c4d"


def test_an_empty_results_folder_the_preflight_made_is_replaced_by_the_link_without_a_trace(tmp_path):
    (tmp_path / "results").mkdir()
    study = tmp_path / "results.by-study" / "lv-study-demo-1a2b3c4d"
    study.mkdir(parents=True)
    show_as_latest(str(tmp_path / "results"), study)
    assert sorted(p.name for p in (tmp_path / "results.by-study").iterdir()) == ["lv-study-demo-1a2b3c4d"]
