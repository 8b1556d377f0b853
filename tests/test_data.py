"""SPEC §2: the data file, its generation, every refusal, the splits."""

import h5py
import numpy as np
import pytest

from lvjob import data
from lvjob.data import DataError


@pytest.fixture(scope="module")
def generated():
    return data.generate(n_systems=12, n_points=40, seed=5)


def test_generation_is_reproducible_per_seed(generated):
    again, params = data.generate(n_systems=12, n_points=40, seed=5)
    assert np.array_equal(again.trajectories, generated[0].trajectories)
    assert np.array_equal(params, generated[1])


def test_different_seeds_give_different_systems(generated):
    other, _ = data.generate(n_systems=12, n_points=40, seed=6)
    assert not np.allclose(other.trajectories, generated[0].trajectories)


def test_generated_populations_are_positive_and_finite(generated):
    x = generated[0].trajectories
    assert x.shape == (12, 40, 2) and np.isfinite(x).all() and (x > 0).all()


def test_parameters_lie_in_the_documented_ranges(generated):
    params = generated[1]
    assert ((params[:, :4] >= data.PARAM_RANGE[0]) & (params[:, :4] <= data.PARAM_RANGE[1])).all()
    assert ((params[:, 4:] >= data.INITIAL_RANGE[0]) & (params[:, 4:] <= data.INITIAL_RANGE[1])).all()
    assert np.array_equal(generated[0].trajectories[:, 0, :], params[:, 4:])


def test_trajectories_satisfy_the_ode():
    # On a fine grid the central difference of the solution matches the right-hand side.
    (lv, params) = data.generate(n_systems=3, n_points=3001, seed=1)
    dt = lv.time[1] - lv.time[0]
    for traj, (a, b, d, g, *_) in zip(lv.trajectories, params):
        deriv = (traj[2:] - traj[:-2]) / (2 * dt)
        x, y = traj[1:-1, 0], traj[1:-1, 1]
        rhs = np.stack([a * x - b * x * y, d * x * y - g * y], axis=1)
        assert np.abs(deriv - rhs).max() < 1e-3


def test_systems_oscillate(generated):
    x = generated[0].trajectories
    assert (x.max(axis=1) / x.min(axis=1) > 1.2).all()


def test_write_then_load_round_trips(tmp_path, generated):
    path = tmp_path / "lv.h5"
    data.write(path, *generated, seed=5)
    lv = data.load(path)
    assert np.array_equal(lv.trajectories, generated[0].trajectories) and np.array_equal(lv.time, generated[0].time)
    assert lv.path == str(path)


def test_a_users_own_file_in_the_layout_loads_unchanged(tmp_path):
    path = tmp_path / "mine.h5"
    with h5py.File(path, "w") as f:
        f["trajectories"] = np.random.default_rng(0).uniform(0.1, 3, size=(5, 10, 2)).astype(np.float32)
        f["time"] = np.arange(10, dtype=np.float32)
        f["notes"] = np.arange(3)
    lv = data.load(path)
    assert lv.trajectories.shape == (5, 10, 2) and lv.trajectories.dtype == np.float64


def _file(tmp_path, trajectories=None, time=None, skip=()):
    path = tmp_path / "bad.h5"
    traj = np.ones((4, 10, 2)) if trajectories is None else trajectories
    with h5py.File(path, "w") as f:
        if "trajectories" not in skip:
            f["trajectories"] = traj
        if "time" not in skip:
            f["time"] = np.arange(traj.shape[1] if traj.ndim > 1 else 10, dtype=float) if time is None else time
    return path


def _refused(path, *words):
    with pytest.raises(DataError) as e:
        data.load(path)
    for w in (str(path), *words):
        assert w in str(e.value), f"{w!r} not in {e.value}"


def test_missing_file_is_refused(tmp_path):
    _refused(tmp_path / "none.h5", "file not found")


def test_a_file_that_is_not_hdf5_is_refused(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("not hdf5")
    _refused(path, "not a readable HDF5 file")


def test_missing_trajectories_dataset_is_refused(tmp_path):
    _refused(_file(tmp_path, skip=("trajectories",)), "'trajectories'", "missing")


def test_missing_time_dataset_is_refused(tmp_path):
    _refused(_file(tmp_path, skip=("time",)), "'time'", "missing")


def test_wrong_rank_is_refused(tmp_path):
    _refused(_file(tmp_path, trajectories=np.ones((4, 10))), "'trajectories'", "rank 2")


def test_wrong_last_axis_is_refused(tmp_path):
    _refused(_file(tmp_path, trajectories=np.ones((4, 10, 3))), "'trajectories'", "last axis 3")


def test_nan_is_refused_with_count_and_first_index(tmp_path):
    x = np.ones((4, 10, 2))
    x[2, 5, 1] = np.nan
    x[3, 0, 0] = np.inf
    _refused(_file(tmp_path, trajectories=x), "'trajectories'", "2 NaN/inf", "(2, 5, 1)")


def test_negative_population_is_refused(tmp_path):
    x = np.ones((4, 10, 2))
    x[1, 3, 0] = -0.5
    _refused(_file(tmp_path, trajectories=x), "'trajectories'", "negative", "(1, 3, 0)")


def test_too_few_points_for_the_split_is_refused(tmp_path):
    _refused(_file(tmp_path, trajectories=np.ones((4, 4, 2))), "'trajectories'", "4 time points", "at least 5")


def test_a_single_system_is_refused(tmp_path):
    _refused(_file(tmp_path, trajectories=np.ones((1, 10, 2))), "'trajectories'", "at least 2")


def test_time_of_the_wrong_length_is_refused(tmp_path):
    _refused(_file(tmp_path, time=np.arange(7.0)), "'time'", "shape (7,)")


def test_time_not_increasing_is_refused(tmp_path):
    t = np.arange(10.0)
    t[6] = 2.0
    _refused(_file(tmp_path, time=t), "'time'", "not strictly increasing")


def test_non_numeric_dataset_is_refused(tmp_path):
    path = tmp_path / "str.h5"
    with h5py.File(path, "w") as f:
        f["trajectories"] = np.array([b"a", b"b"])
        f["time"] = np.arange(3.0)
    _refused(path, "'trajectories'", "dtype")


def test_system_split_is_80_20_disjoint_covering_and_seeded():
    train, val = data.split_systems(1000, 0.2, seed=0)
    assert (len(train), len(val)) == (800, 200)
    assert not set(train) & set(val) and set(train) | set(val) == set(range(1000))
    assert np.array_equal(val, data.split_systems(1000, 0.2, seed=0)[1])
    assert not np.array_equal(val, data.split_systems(1000, 0.2, seed=1)[1])


def test_temporal_split_is_the_first_80_percent_then_the_horizon():
    assert data.context_length(100) == 80
    ctx, hor = data.split_time(np.arange(100))
    assert ctx.tolist() == list(range(80)) and hor.tolist() == list(range(80, 100))
    ctx, hor = data.split_time(np.zeros((3, 100, 2)))
    assert ctx.shape == (3, 80, 2) and hor.shape == (3, 20, 2)


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path, generated, monkeypatch):
    path = tmp_path / "lv.h5"
    data.write(path, *generated)
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(RuntimeError):
        data.write(path, *generated)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["lv.h5"]


def test_ensure_generates_a_missing_file_once(tmp_path):
    from lvjob.study import DataSpec

    spec = DataSpec(path=str(tmp_path / "d" / "lv.h5"), systems=6, points=12, seed=2)
    lv = data.ensure(spec)
    assert lv.trajectories.shape == (6, 12, 2)
    mtime = (tmp_path / "d" / "lv.h5").stat().st_mtime_ns
    data.ensure(spec)
    assert (tmp_path / "d" / "lv.h5").stat().st_mtime_ns == mtime
