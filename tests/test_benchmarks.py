"""The benchmark commands run end to end (at their small sizes), so they cannot rot. No timing is asserted."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run_bench(script: str, flag: str, out: Path) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), flag, "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_make_bench_quick_reports_every_section(tmp_path):
    out = run_bench("bench.py", "--quick", tmp_path)
    for section in ("Evaluation", "Decoding", "Checkpoints", "Resume", "Fixed cost per run", "Text", "FLOP counter", "Scaling"):
        assert f"## {section}" in out
    assert len(list(tmp_path.glob("*-quick.md"))) == 1 and len(list(tmp_path.glob("*-scaling.png"))) == 1


@pytest.mark.slow
def test_fullsize_cpu_benchmark_reports_load_times_and_peak_memory():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fullsize_cpu.py")], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| load, float32 |" in proc.stdout and "494,032,768 parameters" in proc.stdout
    assert "| load, NF4" in proc.stdout and "| peak RSS of this process |" in proc.stdout
