"""The full-size model on this machine's CPU: build, load (float32 and NF4), peak memory, checkpoint size.

    python benchmarks/fullsize_cpu.py [--run-dir DIR]   # DIR: a finished run of the full-size test command

Builds `qwen2.5-0.5b-random` into $LVJOB_CACHE if it is not there (timed), loads it the study's way in
float32 and in NF4, and prints the process's peak RSS. With --run-dir it also prints the sizes of
that run's newest checkpoint and adapter (e.g. a run of tests/models/test_fullsize.py's command).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from lvjob.models.loading import ModelChoice, ensure_built_model, load_model
from lvjob.models.registry import MODELS
from lvjob.core.paths import cache_dir


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, help="a finished full-size run directory, for checkpoint and adapter sizes")
    args = p.parse_args()
    name = "qwen2.5-0.5b-random"
    built = (cache_dir() / MODELS[name].built.folder / "config.json").exists()
    t_build, folder = timed(lambda: ensure_built_model(name))
    rows = [("build (seeded, saved as bf16 safetensors)", "cached" if built else f"{t_build:.1f} s, {size_mb(folder):.0f} MB")]
    t32, model = timed(lambda: load_model(ModelChoice(name)))
    rows.append(("load, float32", f"{t32:.1f} s, {sum(x.numel() for x in model.parameters()):,} parameters"))
    del model
    t4, _ = timed(lambda: load_model(ModelChoice(name, quantize_4bit=True)))
    rows.append(("load, NF4 (bitsandbytes quantises on load)", f"{t4:.1f} s"))
    rows.append(("peak RSS of this process", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB"))
    if args.run_dir:
        newest = sorted((args.run_dir / "checkpoints").glob("step-*"))[-1]
        rows.append((f"checkpoint {newest.name}", f"{size_mb(newest):.1f} MB"))
        rows.append(("PEFT adapter", f"{size_mb(args.run_dir / 'adapter'):.1f} MB"))
    for what, value in rows:
        print(f"| {what} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
