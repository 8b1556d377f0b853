"""The physics and statistical baselines on a file the Lotka-Volterra model does not describe exactly.

    python benchmarks/baseline_bench.py [--series 100] [--workers N]

The series come from another predator-prey model, Lotka-Volterra with a logistic prey term
(dx/dt = a x (1 - x/K) - b x y), at another time scale than the study's generator (100 points over
[0, 200], populations up to ~15): the case of a user's own file. It prints, per baseline, the wall
time over the series (spread over `workers` processes, default: every CPU this process may use, as a
baseline job does), the series that fell back to persistence, the fit's median relative residual
and the horizon MAE; and the same physics baseline on the study's own generated data, whose MAE
says whether the fit's tolerances still give exact forecasts there.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from lvjob import data
from lvjob.forecasting import baselines


def logistic_lotka_volterra(n_series: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(time (100,), trajectories (n_series, 100, 2)) of LV with a logistic prey term, t in [0, 200]."""
    from scipy.integrate import solve_ivp

    rng = np.random.default_rng(seed)
    time_points = np.linspace(0.0, 200.0, 100)
    out = []
    for _ in range(n_series):
        (a, b, d, g), capacity, z0 = rng.uniform(0.3, 0.9, 4), rng.uniform(8, 16), rng.uniform(0.5, 3.0, 2)

        def rhs(_t, z, a=a, b=b, d=d, g=g, capacity=capacity):
            return [a * z[0] * (1 - z[0] / capacity) - b * z[0] * z[1], d * z[0] * z[1] - g * z[1]]
        out.append(solve_ivp(rhs, (0.0, 200.0), z0, t_eval=time_points, rtol=1e-8, atol=1e-10).y.T)
    return time_points, np.array(out)


def run(name: str, trajectories: np.ndarray, time_points: np.ndarray, workers: int) -> dict:
    contexts, truth = data.split_time(trajectories, axis=1)
    context_times, horizon_times = data.split_time(time_points)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        fit = baselines.forecast_with(name, contexts, context_times, horizon_times, pool.map)
    residual = None if fit.residual is None else float(np.nanmedian(fit.residual))
    return {"seconds": time.perf_counter() - t0, "fell_back": int(fit.fell_back.sum()), "residual": residual,
            "mae": float(np.abs(fit.predictions - truth).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.workers} worker process(es)")
    time_points, other = logistic_lotka_volterra(args.series)
    generated, _ = data.generate(n_systems=args.series, n_points=100, seed=0)
    cases = [("physics", "logistic-prey file", other, time_points), ("statistical", "logistic-prey file", other, time_points),
             ("physics", "generated data", generated.trajectories, generated.time)]
    print("| baseline | data | series | wall time | fell back | median fit residual | horizon MAE |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, what, trajectories, times in cases:
        r = run(name, trajectories, times, args.workers)
        residual = "-" if r["residual"] is None else f"{r['residual']:.2g}"
        print(f"| {name} | {what} | {args.series} | {r['seconds']:.1f} s | {r['fell_back']} | {residual} | {r['mae']:.3g} |")


if __name__ == "__main__":
    main()
