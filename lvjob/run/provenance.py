"""Where and with what an attempt ran, for run.json: host, SLURM job, device, peak memory, the code's
git commit (and whether its tree had uncommitted changes), and the versions of the libraries that
decide the numbers.

Nothing here may fail a run: a machine without git, or code that is not a git checkout (an
installed wheel, an image), gives null, never an error.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from lvjob.core.timestamps import utc_now

PACKAGE_DIR = Path(__file__).resolve().parent
LIBRARIES = ("torch", "transformers", "peft", "submitit")


def attempt_record(attempt: int, device: str) -> dict:
    """What run.json keeps of one attempt when it starts (peak memory and end are added when it ends)."""
    return {"attempt": attempt, "started": utc_now(), "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "device": device, "device_name": device_name(device),
            "code": code_version(), "versions": versions()}


def versions() -> dict[str, str | None]:
    """Python's version and each library's installed version (None: not installed)."""
    return {"python": platform.python_version()} | {name: _version(name) for name in LIBRARIES}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def code_version(folder: Path = PACKAGE_DIR) -> dict:
    """The git commit of the checkout holding `folder` and whether tracked files differ from it.

    Both None where git is missing or `folder` is not tracked in a git checkout. Untracked files are
    left out of `dirty`: run outputs beside the code are not changes to it.
    """
    if _git(folder, "ls-files", "--error-unmatch", "__init__.py") is None:  # e.g. a wheel inside someone's repo
        return {"commit": None, "dirty": None}
    commit = _git(folder, "rev-parse", "HEAD")
    changes = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if changes is None else changes != ""}


def _git(folder: Path, *args: str) -> str | None:
    """stdout of `git ARGS` run in `folder`; None if git is missing or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def device_name(device: str) -> str:
    """The GPU's name for a CUDA device, else the CPU's model name."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return _cpu_name()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_memory(device: str) -> dict:
    """Peak memory of this attempt: CUDA's max allocated bytes on a GPU, the process's max RSS on a CPU."""
    if device.startswith("cuda"):
        import torch

        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(torch.device(device))),
                "peak_memory_of": "cuda max allocated"}
    import resource

    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit,
            "peak_memory_of": "process max RSS"}
