"""`make device-check`, the GPU machine's one command, at smoke size on the CPU; and what it looks up about the GPU."""

import subprocess
import sys

import pytest

from helpers import ROOT


def test_device_check_smoke_runs_device_tests_and_bench_gpu_and_prints_one_table(tmp_path):
    """`make device-check SMOKE=1`: the GPU machine's command, at smoke size on the CPU. Its pytest step runs
    one file of device tests: the suite runs every device test itself, so this checks the command, not them again."""
    import os

    env = dict(os.environ, DEVICE_CHECK_OUT=str(tmp_path))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--smoke",
                           "--tests", "tests/forecasting/test_decoding.py"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| tests -m 'device and not slow' | ok" in proc.stdout and "| bench-gpu --smoke | ok" in proc.stdout
    assert "2 passed" in (tmp_path / "tests.log").read_text()  # the file's two device tests, selected by the marker
    bench = (tmp_path / "bench.log").read_text()
    assert "Trainer with lvjob's settings" in bench and "Trainer defaults" in bench and "NOT an estimate" in bench
    assert len(list(tmp_path.glob("*-gpu-smoke.md"))) == 1 and (tmp_path / "device-check.md").exists()


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H100 PCIe", 756.5e12),
                                        ("NVIDIA H100 NVL", 835.5e12), ("NVIDIA H200", 989.4e12),
                                        ("NVIDIA H200 NVL", 835.5e12), ("Some Other GPU", None)])
def test_gpu_peak_is_looked_up_by_the_most_specific_name(name, peak):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_bench import peak_flops

    assert peak_flops(name) == peak
