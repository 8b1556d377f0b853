"""SPEC §2: the data file, its generation, every refusal, the splits."""

import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from lvjob import data
from lvjob.data.dataset import DataError


@pytest.fixture(scope="module")
def generated():
    """50 systems at the study's resolution (100 points over the default window)."""
    return data.generate(n_systems=50, n_points=100, seed=5)


# --- generation --------------------------------------------------------------------------------------


def test_generation_is_byte_identical_for_the_same_seed(generated):
    again, params = data.generate(n_systems=50, n_points=100, seed=5)
    assert again.trajectories.tobytes() == generated[0].trajectories.tobytes()
    assert again.time.tobytes() == generated[0].time.tobytes()
    assert params.tobytes() == generated[1].tobytes()


def test_different_seeds_give_different_systems(generated):
    other, params = data.generate(n_systems=50, n_points=100, seed=6)
    assert not np.allclose(params, generated[1])
    assert not np.allclose(other.trajectories, generated[0].trajectories)


def test_generated_arrays_have_the_file_layout(generated):
    lv, params = generated
    assert lv.trajectories.shape == (50, 100, 2) and lv.trajectories.dtype == np.float64
    assert lv.time.shape == (100,) and params.shape == (50, 6)
    assert (lv.n_systems, lv.n_points, lv.path) == (50, 100, None)


def test_time_grid_is_uniform_from_zero_to_t_end():
    lv, _ = data.generate(n_systems=3, n_points=11, seed=0, t_end=5.0)
    assert lv.time[0] == 0.0 and lv.time[-1] == 5.0
    assert np.allclose(np.diff(lv.time), 0.5)


def test_generated_populations_are_positive_and_finite(generated):
    x = generated[0].trajectories
    assert np.isfinite(x).all() and (x > 0).all()


def test_parameters_lie_in_the_documented_ranges(generated):
    lv, params = generated
    lo, hi = data.PARAM_RANGE
    assert ((params[:, :4] >= lo) & (params[:, :4] <= hi)).all()
    lo, hi = data.INITIAL_RANGE
    assert ((params[:, 4:] >= lo) & (params[:, 4:] <= hi)).all()


def test_each_trajectory_starts_at_its_initial_populations(generated):
    lv, params = generated
    assert np.array_equal(lv.trajectories[:, 0, :], params[:, 4:])


def test_no_system_starts_near_its_equilibrium():
    params = data.draw_params(2000, seed=3)
    offset = np.abs(params[:, 4:] / data.equilibrium(params) - 1)
    assert (offset.max(axis=1) >= data.EQUILIBRIUM_EXCLUSION).all()


def test_every_series_oscillates_over_several_cycles(generated):
    x = generated[0].trajectories
    assert (x.max(axis=1) / x.min(axis=1) >= 1.5).all()  # every variable of every system varies
    prey = x[:, :, 0]
    peaks = ((prey[:, 1:-1] > prey[:, :-2]) & (prey[:, 1:-1] > prey[:, 2:])).sum(axis=1)
    assert peaks.min() >= 2
    assert 0.02 < x.min() and x.max() < 10  # order-1 populations


def test_trajectories_satisfy_the_ode():
    # On a fine grid the central difference of the solution matches the right-hand side.
    lv, params = data.generate(n_systems=3, n_points=3001, seed=1)
    dt = lv.time[1] - lv.time[0]
    for traj, (a, b, d, g, *_) in zip(lv.trajectories, params):
        deriv = (traj[2:] - traj[:-2]) / (2 * dt)
        x, y = traj[1:-1, 0], traj[1:-1, 1]
        rhs = np.stack([a * x - b * x * y, d * x * y - g * y], axis=1)
        assert np.abs(deriv - rhs).max() < 1e-3


def test_trajectories_agree_with_an_independent_per_system_integration(generated):
    # One system at a time, another method (LSODA), the right-hand side written out here.
    def rhs(t, z, a, b, d, g):
        return [a * z[0] - b * z[0] * z[1], d * z[0] * z[1] - g * z[1]]

    lv, params = generated
    for i in (0, 17, 49):
        ref = solve_ivp(rhs, (lv.time[0], lv.time[-1]), params[i, 4:], method="LSODA",
                        t_eval=lv.time, args=tuple(params[i, :4]), rtol=1e-11, atol=1e-13)
        assert np.abs(lv.trajectories[i] / ref.y.T - 1).max() < 1e-7


def invariant(trajectories: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(systems, points): V = d x - g ln x + b y - a ln y, constant along every exact orbit."""
    a, b, d, g = (params[:, i, None] for i in range(4))
    x, y = trajectories[..., 0], trajectories[..., 1]
    return d * x - g * np.log(x) + b * y - a * np.log(y)


def test_the_conserved_quantity_stays_constant(generated):
    lv, params = generated
    v = invariant(lv.trajectories, params)
    assert np.abs(v / v[:, :1] - 1).max() < 1e-7


@pytest.mark.parametrize("kwargs", [dict(n_systems=1), dict(n_points=4), dict(t_end=0.0)])
def test_generate_refuses_settings_the_splits_cannot_use(kwargs):
    with pytest.raises(ValueError):
        data.generate(**{"n_systems": 2, "n_points": 5, **kwargs})


# --- write / load ------------------------------------------------------------------------------------


def test_write_then_load_round_trips(tmp_path, generated):
    path = tmp_path / "lv.h5"
    data.write(path, *generated, seed=5, t_end=data.T_END, generator="lvjob")
    lv = data.load(path)
    assert lv.trajectories.tobytes() == generated[0].trajectories.tobytes()
    assert lv.time.tobytes() == generated[0].time.tobytes()
    assert lv.path == str(path)


def test_written_file_carries_params_with_column_names_and_settings(tmp_path, generated):
    path = tmp_path / "lv.h5"
    data.write(path, *generated, seed=5, t_end=data.T_END)
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["params"][()], generated[1])
        assert f["params"].attrs["columns"] == "a,b,d,g,x0,y0"
        assert f["trajectories"].attrs["variables"] == "prey,predator"
        assert f.attrs["seed"] == 5 and f.attrs["t_end"] == data.T_END


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_a_users_own_file_in_the_layout_loads_unchanged(tmp_path, dtype):
    path = tmp_path / "mine.h5"
    traj = np.random.default_rng(0).uniform(0.1, 30, size=(5, 10, 2)).astype(dtype)
    with h5py.File(path, "w") as f:  # no attributes, no params, an extra dataset
        f["trajectories"] = traj
        f["time"] = np.arange(10, dtype=dtype)
        f["notes"] = np.arange(3)
    lv = data.load(path)
    assert lv.trajectories.dtype == np.float64 and np.array_equal(lv.trajectories, traj.astype(np.float64))
    assert (lv.n_systems, lv.n_points) == (5, 10)


def test_zero_populations_are_accepted(tmp_path):
    x = np.ones((4, 10, 2))
    x[0, 3, 1] = 0.0  # an extinct predator is data, not an error
    assert data.load(_file(tmp_path, trajectories=x)).trajectories[0, 3, 1] == 0.0


def _file(tmp_path, trajectories=None, time=None, skip=()):
    path = tmp_path / "bad.h5"
    traj = np.ones((4, 10, 2)) if trajectories is None else trajectories
    with h5py.File(path, "w") as f:
        if "trajectories" not in skip:
            f["trajectories"] = traj
        if "time" not in skip:
            f["time"] = np.arange(traj.shape[1] if traj.ndim > 1 else 10, dtype=float) if time is None else time
    return path


def _refused(path, *words, **load_kwargs):
    """Load must fail with a message naming the file, then every one of `words` (dataset, problem)."""
    with pytest.raises(DataError) as e:
        data.load(path, **load_kwargs)
    message = str(e.value)
    for w in (str(path), *words):
        assert w in message, f"{w!r} not in {message}"
    assert "valid" in message  # and says what would be valid
    return message


def test_missing_file_is_refused(tmp_path):
    _refused(tmp_path / "none.h5", "file not found", "'trajectories'")


def test_a_file_that_is_not_hdf5_is_refused(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("not hdf5")
    _refused(path, "not a readable HDF5 file", "'trajectories'")


def test_missing_trajectories_dataset_is_refused(tmp_path):
    _refused(_file(tmp_path, skip=("trajectories",)), "dataset 'trajectories'", "missing", "has: time")


def test_missing_time_dataset_is_refused(tmp_path):
    _refused(_file(tmp_path, skip=("time",)), "dataset 'time'", "missing", "has: trajectories")


def test_trajectories_as_a_group_is_refused(tmp_path):
    path = tmp_path / "group.h5"
    with h5py.File(path, "w") as f:
        f.create_group("trajectories")
        f["time"] = np.arange(10.0)
    _refused(path, "'trajectories'", "is a group")


def test_wrong_rank_is_refused(tmp_path):
    _refused(_file(tmp_path, trajectories=np.ones((4, 10))), "dataset 'trajectories'", "rank 2", "rank 3")


def test_wrong_last_axis_is_refused(tmp_path):
    _refused(_file(tmp_path, trajectories=np.ones((4, 10, 3))), "dataset 'trajectories'", "last axis 3",
             "2 (prey, predator)")


def test_nan_is_refused_with_count_and_first_index(tmp_path):
    x = np.ones((4, 10, 2))
    x[2, 5, 1] = np.nan
    x[3, 0, 0] = np.nan
    _refused(_file(tmp_path, trajectories=x), "dataset 'trajectories'", "2 NaN/inf", "(2, 5, 1)")


def test_inf_is_refused_with_count_and_first_index(tmp_path):
    x = np.ones((4, 10, 2))
    x[1, 9, 0] = np.inf
    _refused(_file(tmp_path, trajectories=x), "dataset 'trajectories'", "1 NaN/inf", "(1, 9, 0)")


def test_negative_population_is_refused_with_first_index(tmp_path):
    x = np.ones((4, 10, 2))
    x[1, 3, 0] = -0.5
    x[3, 1, 1] = -2.0
    _refused(_file(tmp_path, trajectories=x), "dataset 'trajectories'", "2 negative", "-0.5", "(1, 3, 0)")


def test_too_few_points_for_the_split_is_refused(tmp_path):
    _refused(_file(tmp_path, trajectories=np.ones((4, 4, 2))), "dataset 'trajectories'", "4 time points",
             "at least 5")


def test_a_caller_can_demand_more_points(tmp_path):
    _refused(_file(tmp_path), "dataset 'trajectories'", "10 time points", "at least 20", min_points=20)


def test_a_single_system_is_refused(tmp_path):
    _refused(_file(tmp_path, trajectories=np.ones((1, 10, 2))), "dataset 'trajectories'", "1 system",
             "at least 3")


def test_time_of_the_wrong_length_is_refused(tmp_path):
    _refused(_file(tmp_path, time=np.arange(7.0)), "dataset 'time'", "shape (7,)", "(10,)")


def test_time_of_the_wrong_rank_is_refused(tmp_path):
    _refused(_file(tmp_path, time=np.zeros((10, 1))), "dataset 'time'", "shape (10, 1)", "(10,)")


def test_time_not_strictly_increasing_is_refused(tmp_path):
    t = np.arange(10.0)
    t[6] = 5.0  # a repeated time
    _refused(_file(tmp_path, time=t), "dataset 'time'", "not strictly increasing", "time[5] = 5, time[6] = 5")


def test_nan_time_is_refused(tmp_path):
    t = np.arange(10.0)
    t[4] = np.nan
    _refused(_file(tmp_path, time=t), "dataset 'time'", "1 NaN/inf", "index 4")


def test_non_numeric_trajectories_are_refused(tmp_path):
    path = tmp_path / "str.h5"
    with h5py.File(path, "w") as f:
        f["trajectories"] = np.array([b"a", b"b"])
        f["time"] = np.arange(3.0)
    _refused(path, "dataset 'trajectories'", "non-numeric dtype", "float or integer")


def test_non_numeric_time_is_refused(tmp_path):
    _refused(_file(tmp_path, time=np.array([b"t"] * 10)), "dataset 'time'", "non-numeric dtype")


def test_write_refuses_data_that_load_would_refuse(tmp_path):
    x = np.ones((4, 10, 2))
    x[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        data.write(tmp_path / "lv.h5", data.LVData(x, np.arange(10.0)))
    assert list(tmp_path.iterdir()) == []


# --- atomic writes -----------------------------------------------------------------------------------


def _fail_create_dataset(monkeypatch):
    real = h5py.Group.create_dataset

    def fail_after_first(self, name, *a, **k):  # the file is half-written when this raises
        if name != "trajectories":
            raise RuntimeError("killed mid-write")
        return real(self, name, *a, **k)

    monkeypatch.setattr(h5py.Group, "create_dataset", fail_after_first)


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path, generated, monkeypatch):
    path = tmp_path / "lv.h5"
    data.write(path, *generated)
    before = path.read_bytes()
    _fail_create_dataset(monkeypatch)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        data.write(path, *generated)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["lv.h5"]


def test_a_failed_first_write_leaves_no_file(tmp_path, generated, monkeypatch):
    _fail_create_dataset(monkeypatch)
    with pytest.raises(RuntimeError):
        data.write(tmp_path / "lv.h5", *generated)
    assert list(tmp_path.iterdir()) == []


def test_a_process_killed_mid_write_leaves_the_old_file_loadable(tmp_path, generated):
    path = tmp_path / "lv.h5"
    data.write(path, *generated)
    before = path.read_bytes()
    child = textwrap.dedent("""
        import os, signal, sys
        import h5py
        from lvjob import data
        real = h5py.Group.create_dataset
        def create_then_die(self, name, *a, **k):
            out = real(self, name, *a, **k)
            if name == "trajectories":  # the new file holds trajectories but no time yet
                self.file.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        h5py.Group.create_dataset = create_then_die
        lv, params = data.generate(n_systems=3, n_points=10, seed=9)
        data.write(sys.argv[1], lv, params)
    """)
    proc = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert path.read_bytes() == before
    assert data.load(path).n_systems == 50
    # A killed process cannot clean up: its half-written file stays under a hidden temporary name.
    assert all(p.name.startswith(".lv.h5.") and p.name.endswith(".tmp") for p in tmp_path.iterdir() if p != path)


# --- splits ------------------------------------------------------------------------------------------


def test_system_split_is_800_train_100_validation_100_test_for_1000():
    split = data.split_systems(1000, seed=0)
    assert [len(part) for part in split] == [800, 100, 100]


def test_system_split_is_disjoint_covering_and_sorted():
    split = data.split_systems(1000, seed=0)
    parts = [set(p.tolist()) for p in split]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sorted(np.concatenate(split).tolist()) == list(range(1000))
    assert all((np.diff(p) > 0).all() for p in split)


def test_system_split_is_seeded():
    assert all(np.array_equal(a, b) for a, b in zip(data.split_systems(1000, seed=0), data.split_systems(1000, seed=0)))
    assert not np.array_equal(data.split_systems(1000, seed=0).test, data.split_systems(1000, seed=1).test)


def test_system_split_keeps_every_part_non_empty():
    assert [len(s) for s in data.split_systems(3)] == [1, 1, 1]
    assert [len(s) for s in data.split_systems(4, val_fraction=0.8, test_fraction=0.1)] == [1, 2, 1]


@pytest.mark.parametrize("args", [(2, 0.1, 0.1), (10, 0.0, 0.1), (10, 0.1, 0.0), (10, 0.5, 0.5), (10, 1.0, 0.1)])
def test_system_split_refuses_what_it_cannot_split(args):
    with pytest.raises(ValueError):
        data.split_systems(*args)


def test_splits_count_like_the_study_spec():
    from lvjob.data.dataset import DataSpec

    for systems, points in [(1000, 100), (20, 30), (7, 13), (3, 5)]:
        spec = DataSpec(systems=systems, points=points)
        assert [len(p) for p in data.split_systems(systems)] == list(spec.split_sizes().values())
        assert data.context_points(points) == spec.context_points


def test_a_data_spec_without_training_systems_left_is_refused_naming_the_field():
    from lvjob.core.config import ConfigError, build
    from lvjob.data.dataset import DataSpec

    with pytest.raises(ConfigError, match="data.test_fraction"):
        build(DataSpec, {"val_fraction": 0.5, "test_fraction": 0.5}, where="study.yaml")


def test_temporal_split_is_the_first_80_percent_then_the_horizon():
    assert data.context_points(100) == 80
    ctx, hor = data.split_time(np.arange(100))
    assert ctx.tolist() == list(range(80)) and hor.tolist() == list(range(80, 100))


def test_temporal_split_cuts_the_time_axis_of_every_layout():
    assert [a.shape for a in data.split_time(np.zeros((100, 2)))] == [(80, 2), (20, 2)]
    assert [a.shape for a in data.split_time(np.zeros((3, 100, 2)))] == [(3, 80, 2), (3, 20, 2)]
    assert [a.shape for a in data.split_time(np.zeros((3, 100)), axis=1)] == [(3, 80), (3, 20)]


def test_the_shortest_series_still_has_a_context_and_a_horizon():
    assert data.context_points(data.MIN_POINTS) == 4
    assert data.context_points(2, horizon_fraction=0.1) == 1


@pytest.mark.parametrize("args", [(1, 0.2), (10, 0.0), (10, 1.0)])
def test_temporal_split_refuses_what_it_cannot_split(args):
    with pytest.raises(ValueError):
        data.context_points(*args)


# --- ensure ------------------------------------------------------------------------------------------


def test_ensure_generates_a_missing_file_once(tmp_path):
    from lvjob.data.dataset import DataSpec

    spec = DataSpec(path=str(tmp_path / "d" / "lv.h5"), systems=6, points=12, seed=2)
    lv = data.ensure(spec)
    assert lv.trajectories.shape == (6, 12, 2)
    mtime = (tmp_path / "d" / "lv.h5").stat().st_mtime_ns
    data.ensure(spec)
    assert (tmp_path / "d" / "lv.h5").stat().st_mtime_ns == mtime
