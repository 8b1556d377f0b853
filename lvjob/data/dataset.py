"""Lotka-Volterra data (SPEC §2): generate, write, load with every check, split.

File layout (HDF5): dataset `trajectories` (systems, time points, 2) = prey, predator, and dataset
`time` (time points,). Generated files also carry `params` (systems, 6) with its column names
(a, b, d, g, x0, y0) in the attribute `columns`, and the generation settings as file attributes; a
user's own file needs only the two datasets (any float or integer dtype, extra datasets ignored).

The ODE and how the systems are drawn and integrated: lvjob.data.ode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lvjob.core.atomic import atomic_path
from lvjob.core.config import require
from lvjob.data.ode import PARAM_NAMES, T_END, draw_params, integrate

VARIABLES = ("prey", "predator")
# 5 points is the shortest series whose 20% horizon is a whole point (1 of 5) and whose context
# (4 points) still gives the scaler a range to fit; the temporal split needs both parts non-empty.
MIN_POINTS = 5
MIN_SYSTEMS = 3  # the system split needs at least one training, one validation and one test system
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DataSpec:
    """The data a study or job uses: the file, and how it is generated if missing and split."""

    path: str = "data/lv.h5"  # generated with the settings below if missing
    systems: int = 1000
    points: int = 100
    seed: int = 0  # generates the file and draws the system split
    val_fraction: float = 0.1  # 800 / 100 / 100 systems for training / validation / test (SPEC §2)
    test_fraction: float = 0.1
    horizon_fraction: float = 0.2

    def __post_init__(self) -> None:
        require(self.systems >= MIN_SYSTEMS, "data.systems", self.systems, f"integers >= {MIN_SYSTEMS}")
        require(self.points >= MIN_POINTS, "data.points", self.points, f"integers >= {MIN_POINTS}")
        require(0 < self.val_fraction < 1, "data.val_fraction", self.val_fraction, "0 < value < 1")
        require(0 < self.test_fraction < 1 - self.val_fraction, "data.test_fraction", self.test_fraction,
                f"0 < value < 1 - data.val_fraction ({1 - self.val_fraction:g}), so training systems remain")
        require(0 < self.horizon_fraction < 1, "data.horizon_fraction", self.horizon_fraction, "0 < value < 1")

    def split_sizes(self, n_systems: int | None = None) -> dict[str, int]:
        """{split: systems} of a file with `n_systems` systems (default: the spec's own count)."""
        return dict(zip(SPLITS, split_counts(n_systems or self.systems, self.val_fraction, self.test_fraction)))

    def split(self, n_systems: int) -> "Split":
        """The seeded system split of a file with `n_systems` systems."""
        return split_systems(n_systems, self.val_fraction, self.test_fraction, self.seed)

    @property
    def horizon_points(self) -> int:
        return self.points - self.context_points

    @property
    def context_points(self) -> int:
        return context_points(self.points, self.horizon_fraction)


class DataError(ValueError):
    """A data file that cannot be used; the message names the file, the dataset and the problem."""


@dataclass(frozen=True)
class LVData:
    """Trajectories (systems, points, 2) [prey, predator] in float64 at `time` (points,)."""

    trajectories: np.ndarray
    time: np.ndarray
    path: str | None = None  # where it was loaded from, for messages

    @property
    def n_systems(self) -> int:
        return self.trajectories.shape[0]

    @property
    def n_points(self) -> int:
        return self.trajectories.shape[1]


# --- generation ----------------------------------------------------------------------------------

def generate(n_systems: int = 1000, n_points: int = 100, seed: int = 0,
             t_end: float = T_END) -> tuple[LVData, np.ndarray]:
    """Seeded systems on a uniform grid over [0, t_end]; the same arguments give byte-identical arrays.

    Returns (data, params), params (systems, 6) = a, b, d, g, x0, y0, for `write` to store.
    """
    if n_systems < MIN_SYSTEMS:
        raise ValueError(f"n_systems (--systems) must be >= {MIN_SYSTEMS} for the system split, got {n_systems}")
    if n_points < MIN_POINTS:
        raise ValueError(f"n_points (--points) must be >= {MIN_POINTS} for the temporal split, got {n_points}")
    if not (np.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be a positive number, got {t_end}")
    time = np.linspace(0.0, float(t_end), n_points)
    params = draw_params(n_systems, seed)
    trajectories = integrate(params, time)
    if not (np.isfinite(trajectories).all() and (trajectories > 0).all()):
        raise RuntimeError("generated populations are not all positive and finite; the solver failed silently")
    return LVData(trajectories=trajectories, time=time), params


def write(path: str | Path, data: LVData, params: np.ndarray | None = None, **attrs) -> None:
    """Write the HDF5 file atomically (a kill leaves the old file or the new one, never half).

    `attrs` (e.g. seed=0, t_end=30.0, generator="lvjob") become file attributes. Data that `load`
    would refuse is refused here too, so no file this writes is unusable.
    """
    import h5py

    path = Path(path)
    traj, time = np.asarray(data.trajectories), np.asarray(data.time)
    _check_trajectories(path, traj, MIN_POINTS)
    _check_time(path, time, traj.shape[1])
    if params is not None and np.shape(params) != (traj.shape[0], len(PARAM_NAMES)):
        raise ValueError(f"{path}: params has shape {np.shape(params)}; valid: ({traj.shape[0]}, {len(PARAM_NAMES)})")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("trajectories", data=traj).attrs["variables"] = ",".join(VARIABLES)
            f.create_dataset("time", data=time)
            if params is not None:
                f.create_dataset("params", data=params).attrs["columns"] = ",".join(PARAM_NAMES)
            for k, v in attrs.items():
                f.attrs[k] = v


def ensure(spec) -> LVData:
    """Load `spec.path`, generating it first (with the spec's systems, points and seed) if missing."""
    path = Path(spec.path)
    if not path.exists():
        lv, params = generate(spec.systems, spec.points, spec.seed)
        write(path, lv, params, seed=spec.seed, t_end=T_END, generator="lvjob")
    return load(path)


# --- loading with every check of SPEC §2 --------------------------------------------------------

_LAYOUT = "'trajectories' (systems, points, 2) and 'time' (points,)"


def load(path: str | Path, min_points: int = MIN_POINTS) -> LVData:
    """Read and validate a data file; every unusable case raises DataError saying what is valid."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; valid: an HDF5 file with datasets {_LAYOUT}, "
                        f"e.g. `lvjob data generate --out {path}`")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e}); valid: an HDF5 file with datasets {_LAYOUT}") from None
    with f:
        traj = _dataset(f, path, "trajectories")
        time = _dataset(f, path, "time")
    _check_trajectories(path, traj, min_points)
    _check_time(path, time, traj.shape[1])
    return LVData(trajectories=traj.astype(np.float64), time=time.astype(np.float64), path=str(path))


def _dataset(f, path: Path, name: str) -> np.ndarray:
    if name not in f:
        raise DataError(f"{path}: dataset '{name}' is missing; valid: datasets {_LAYOUT}; "
                        f"the file has: {', '.join(f.keys()) or 'nothing'}")
    obj = f[name]
    if not hasattr(obj, "dtype"):
        raise DataError(f"{path}: '{name}' is a group, not a dataset; valid: datasets {_LAYOUT}")
    if not (np.issubdtype(obj.dtype, np.floating) or np.issubdtype(obj.dtype, np.integer)):
        raise DataError(f"{path}: dataset '{name}' has non-numeric dtype {obj.dtype}; valid: a float or integer dtype")
    return obj[()]


def _check_trajectories(path: Path, x: np.ndarray, min_points: int) -> None:
    where = f"{path}: dataset 'trajectories'"
    if x.ndim != 3:
        raise DataError(f"{where} has rank {x.ndim} (shape {x.shape}); valid: rank 3, (systems, points, 2)")
    if x.shape[2] != 2:
        raise DataError(f"{where} has last axis {x.shape[2]} (shape {x.shape}); valid: 2 (prey, predator)")
    if x.shape[0] < MIN_SYSTEMS:
        raise DataError(f"{where} has {x.shape[0]} system(s); valid: at least {MIN_SYSTEMS}, "
                        "so the system split has a training, a validation and a test system")
    if x.shape[1] < min_points:
        raise DataError(f"{where} has {x.shape[1]} time points; valid: at least {min_points}, "
                        "so the 80/20 temporal split leaves a non-empty context and horizon")
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where} has {int(bad.sum())} NaN/inf value(s), the first at (system, point, variable) = "
                        f"{first}; valid: finite populations")
    neg = x < 0
    if neg.any():
        first = tuple(int(i) for i in np.argwhere(neg)[0])
        raise DataError(f"{where} has {int(neg.sum())} negative population(s), the first {x[first]:g} at "
                        f"(system, point, variable) = {first}; valid: populations >= 0")


def _check_time(path: Path, t: np.ndarray, n_points: int) -> None:
    where = f"{path}: dataset 'time'"
    if t.shape != (n_points,):
        raise DataError(f"{where} has shape {t.shape}; valid: ({n_points},), one time per point of 'trajectories'")
    bad = ~np.isfinite(t)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"{where} has {int(bad.sum())} NaN/inf value(s), the first at index {first}; valid: finite times")
    step = np.diff(t)
    if (step <= 0).any():
        i = int(np.argmax(step <= 0))
        raise DataError(f"{where} is not strictly increasing: time[{i}] = {t[i]:g}, time[{i + 1}] = {t[i + 1]:g}; "
                        "valid: strictly increasing times")


# --- splits ----------------------------------------------------------------------------------------


class Split(NamedTuple):
    """System indices of each part, each sorted: training, validation (every choice), test (reports)."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def split_systems(n_systems: int, val_fraction: float = DataSpec.val_fraction, test_fraction: float = DataSpec.test_fraction,
                  seed: int = DataSpec.seed) -> Split:
    """Seeded split of system indices into (train, validation, test); 800/100/100 for 1000.

    One permutation: validation takes its head, test the next part, training the rest. The sizes
    come from `split_counts`, so every part is non-empty.
    """
    _, n_val, n_test = split_counts(n_systems, val_fraction, test_fraction)
    perm = np.random.default_rng(seed).permutation(n_systems)
    return Split(np.sort(perm[n_val + n_test:]), np.sort(perm[:n_val]), np.sort(perm[n_val:n_val + n_test]))


def split_counts(n_systems: int, val_fraction: float = DataSpec.val_fraction,
                 test_fraction: float = DataSpec.test_fraction) -> tuple[int, int, int]:
    """(train, validation, test) sizes: validation and test round(n x fraction), at least 1 each, and
    at least one training system left."""
    if n_systems < MIN_SYSTEMS:
        raise ValueError(f"split_systems: need at least {MIN_SYSTEMS} systems (train, validation, test), got {n_systems}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"split_systems: val_fraction {val_fraction} and test_fraction {test_fraction} must be in "
                         "(0, 1) with a sum below 1")
    n_val = min(n_systems - 2, max(1, round(n_systems * val_fraction)))
    n_test = min(n_systems - 1 - n_val, max(1, round(n_systems * test_fraction)))
    return n_systems - n_val - n_test, n_val, n_test


def context_points(n_points: int, horizon_fraction: float = DataSpec.horizon_fraction) -> int:
    """Number of context points: the first 80% (80 of 100); the rest is the horizon.

    The horizon is round(n_points * horizon_fraction), kept between 1 and n_points - 1.
    """
    if n_points < 2:
        raise ValueError(f"context_points: need at least 2 points for a context and a horizon, got {n_points}")
    if not 0 < horizon_fraction < 1:
        raise ValueError(f"context_points: horizon_fraction must be in (0, 1), got {horizon_fraction}")
    horizon = min(n_points - 1, max(1, round(n_points * horizon_fraction)))
    return n_points - horizon


def split_time(series: np.ndarray, horizon_fraction: float = DataSpec.horizon_fraction, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(context, horizon) of an array along its time axis.

    By default the time axis is 0 for (points,) or (points, 2) and 1 for (systems, points, 2); pass
    `axis` for any other layout (e.g. 1 for a (systems, points) array of one variable).
    """
    series = np.asarray(series)
    if axis is None:
        axis = 0 if series.ndim <= 2 else 1
    n = context_points(series.shape[axis], horizon_fraction)
    context, horizon = np.split(series, [n], axis=axis)
    return context, horizon
