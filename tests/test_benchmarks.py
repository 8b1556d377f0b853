"""The benchmark commands run end to end (at their small sizes), so they cannot rot. No timing is asserted."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def run_bench(script: str, flag: str, out: Path) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), flag, "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_make_bench_quick_reports_every_section(tmp_path):
    out = run_bench("bench.py", "--quick", tmp_path)
    for section in ("Evaluation", "Decoding", "Checkpoints", "Resume", "Text", "FLOP counter", "Scaling"):
        assert f"## {section}" in out
    assert len(list(tmp_path.glob("*-quick.md"))) == 1 and len(list(tmp_path.glob("*-scaling.png"))) == 1


def test_bench_gpu_smoke_runs_the_gpu_code_path_end_to_end(tmp_path):
    out = run_bench("gpu_bench.py", "--smoke", tmp_path)
    assert "HF Trainer" in out and "generated tokens/s" in out and "NOT an estimate" in out
    assert len(list(tmp_path.glob("*-gpu-smoke.md"))) == 1
