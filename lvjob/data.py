"""Lotka-Volterra data (SPEC §2): generate, write, load with every check, split.

File layout (HDF5): dataset `trajectories` (systems, time points, 2) = prey, predator, and dataset
`time` (time points,). Generated files also carry `params` (systems, 6) = a, b, d, g, x0, y0 and the
generation settings as attributes; a user's own file needs only the two datasets.

The ODE: dx/dt = a x - b x y, dy/dt = d x y - g y. Per system, drawn uniformly:

    a, b, d, g in [0.6, 1.4]     so the equilibrium (g/d, a/b) lies near (1, 1) and one cycle takes
                                 about 2 pi / sqrt(a g), i.e. 4.5 to 10.5 time units;
    x0, y0    in [0.3, 2.0]      off the equilibrium, so every system oscillates visibly.

Integrated over t in [0, 30] (3 to 7 cycles) with scipy's DOP853 at rtol 1e-9, atol 1e-12, sampled on
a uniform grid. Populations stay positive: the exact solution never reaches zero and the solver's
error is far below the smallest population reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvjob.atomic import atomic_path

PARAM_RANGE = (0.6, 1.4)  # a, b, d, g
INITIAL_RANGE = (0.3, 2.0)  # x0, y0
T_END = 30.0
PARAM_NAMES = ("a", "b", "d", "g", "x0", "y0")
MIN_POINTS = 5  # the 80/20 temporal split needs a non-empty context and horizon
MIN_SYSTEMS = 2  # the 80/20 system split needs a train and a validation system


class DataError(ValueError):
    """A data file that cannot be used; the message names the file, the dataset and the problem."""


@dataclass(frozen=True)
class LVData:
    trajectories: np.ndarray  # (systems, points, 2), float64
    time: np.ndarray  # (points,)
    path: str | None = None

    @property
    def n_systems(self) -> int:
        return self.trajectories.shape[0]

    @property
    def n_points(self) -> int:
        return self.trajectories.shape[1]


# --- generation ----------------------------------------------------------------------------------


def lotka_volterra(t: float, z: np.ndarray, a: float, b: float, d: float, g: float) -> np.ndarray:
    x, y = z
    return np.array([a * x - b * x * y, d * x * y - g * y])


def draw_params(n_systems: int, seed: int) -> np.ndarray:
    """(systems, 6): a, b, d, g, x0, y0 for each system."""
    rng = np.random.default_rng(seed)
    rates = rng.uniform(*PARAM_RANGE, size=(n_systems, 4))
    initial = rng.uniform(*INITIAL_RANGE, size=(n_systems, 2))
    return np.concatenate([rates, initial], axis=1)


def integrate(params: np.ndarray, time: np.ndarray) -> np.ndarray:
    """One system's (points, 2) trajectory at the given times."""
    from scipy.integrate import solve_ivp

    a, b, d, g, x0, y0 = params
    sol = solve_ivp(lotka_volterra, (time[0], time[-1]), [x0, y0], method="DOP853", t_eval=time,
                    args=(a, b, d, g), rtol=1e-9, atol=1e-12)
    if not sol.success:
        raise RuntimeError(f"ODE integration failed for parameters {params.tolist()}: {sol.message}")
    return sol.y.T


def generate(n_systems: int = 1000, n_points: int = 100, seed: int = 0, t_end: float = T_END) -> tuple[LVData, np.ndarray]:
    """Seeded systems; the same arguments give byte-identical arrays. Returns (data, params)."""
    if n_systems < MIN_SYSTEMS:
        raise ValueError(f"--systems must be >= {MIN_SYSTEMS}, got {n_systems}")
    if n_points < MIN_POINTS:
        raise ValueError(f"--points must be >= {MIN_POINTS}, got {n_points}")
    time = np.linspace(0.0, t_end, n_points)
    params = draw_params(n_systems, seed)
    trajectories = np.stack([integrate(p, time) for p in params])
    return LVData(trajectories=trajectories, time=time), params


def write(path: str | Path, data: LVData, params: np.ndarray | None = None, **attrs) -> None:
    """Write the HDF5 file atomically (a kill leaves the old file or the new one, never half)."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("trajectories", data=data.trajectories)
            f.create_dataset("time", data=data.time)
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


def load(path: str | Path, min_points: int = MIN_POINTS) -> LVData:
    import h5py

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; generate one with `lvjob data generate --out {path}`")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        traj = _dataset(f, path, "trajectories")
        time = _dataset(f, path, "time")
    _check_trajectories(path, traj, min_points)
    _check_time(path, time, traj.shape[1])
    return LVData(trajectories=traj.astype(np.float64), time=time.astype(np.float64), path=str(path))


def _dataset(f, path: Path, name: str) -> np.ndarray:
    if name not in f:
        raise DataError(f"{path}: dataset '{name}' is missing; the file needs 'trajectories' "
                        f"(systems, points, 2) and 'time' (points,); it has: {', '.join(f.keys()) or 'nothing'}")
    obj = f[name]
    if not hasattr(obj, "dtype"):
        raise DataError(f"{path}: '{name}' is a group, not a dataset")
    if not (np.issubdtype(obj.dtype, np.floating) or np.issubdtype(obj.dtype, np.integer)):
        raise DataError(f"{path}: dataset '{name}' has dtype {obj.dtype}; valid: a float or integer dtype")
    return obj[()]


def _check_trajectories(path: Path, x: np.ndarray, min_points: int) -> None:
    where = f"{path}: dataset 'trajectories'"
    if x.ndim != 3:
        raise DataError(f"{where} has rank {x.ndim} (shape {x.shape}); valid: rank 3, (systems, points, 2)")
    if x.shape[2] != 2:
        raise DataError(f"{where} has last axis {x.shape[2]} (shape {x.shape}); valid: 2 (prey, predator)")
    if x.shape[0] < MIN_SYSTEMS:
        raise DataError(f"{where} has {x.shape[0]} system(s); valid: at least {MIN_SYSTEMS} for the train/validation split")
    if x.shape[1] < min_points:
        raise DataError(f"{where} has {x.shape[1]} time points; valid: at least {min_points} so the 80/20 "
                        "split leaves a non-empty context and horizon")
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where} has {int(bad.sum())} NaN/inf value(s), the first at (system, point, variable) = {first}")
    neg = x < 0
    if neg.any():
        first = tuple(int(i) for i in np.argwhere(neg)[0])
        raise DataError(f"{where} has {int(neg.sum())} negative population(s), the first {x[first]:g} at "
                        f"(system, point, variable) = {first}; populations must be >= 0")


def _check_time(path: Path, t: np.ndarray, n_points: int) -> None:
    where = f"{path}: dataset 'time'"
    if t.shape != (n_points,):
        raise DataError(f"{where} has shape {t.shape}; valid: ({n_points},), one time per point of 'trajectories'")
    if not np.isfinite(t).all():
        raise DataError(f"{where} has NaN/inf values")
    if (np.diff(t) <= 0).any():
        i = int(np.argmax(np.diff(t) <= 0))
        raise DataError(f"{where} is not strictly increasing: time[{i}] = {t[i]:g}, time[{i + 1}] = {t[i + 1]:g}")


# --- splits ----------------------------------------------------------------------------------------


def split_systems(n_systems: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of system indices into (train, validation), each sorted; 800/200 for 1000."""
    n_val = min(n_systems - 1, max(1, round(n_systems * val_fraction)))
    perm = np.random.default_rng(seed).permutation(n_systems)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def context_length(n_points: int, horizon_fraction: float = 0.2) -> int:
    """Number of context points: the first 80% (80 of 100); the rest is the horizon."""
    horizon = min(n_points - 1, max(1, round(n_points * horizon_fraction)))
    return n_points - horizon


def split_time(series: np.ndarray, horizon_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(context, horizon) of a (points, ...) or (systems, points, ...) array along its time axis."""
    axis = 0 if series.ndim <= 2 else 1
    n = context_length(series.shape[axis], horizon_fraction)
    return np.split(series, [n], axis=axis)
