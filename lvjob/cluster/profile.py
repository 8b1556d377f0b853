"""Cluster profiles (SPEC §7): where and how a study's jobs run, in a YAML file, never in code.

`slurm/<name>.yaml` (or any path) is loaded here like a job spec: an unknown key, a wrong type or an
out-of-range value is refused before anything is submitted, naming the key and what is valid.

A profile chooses the executor (`local` or submitit's `slurm`), the packing (one job per run, or the
whole study in one allocation), the study's scale and model, the SLURM resources, and optionally an
Apptainer image. The process SLURM starts always stays on the host (the project's Python: it has
SLURM's client and config, so it can requeue); it runs the runner as a child
(lvjob.cluster.supervise), with an image as

    apptainer exec --nv --cleanenv --env K=V... --bind <binds> --pwd DIR IMAGE python -m lvjob run JOB.yaml

which is what `runner_command` builds (a list, never a shell string). `--cleanenv` keeps the host's
variables (and packages in ~/.local, with PYTHONNOUSERSITE) out; `runner_env` is what is passed in.

Paths may name environment variables (`$SCRATCH/runs`, `${USER}`): they are expanded when the
profile is loaded, on the machine that submits (clusters put runs on scratch). An unset one is
refused by name. `pull.path` is a folder on the cluster, read from a laptop: it is left as written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

from lvjob.core.heartbeat import StallRule
from lvjob.core.stops import READY_FILE
from lvjob.core.config import ConfigError, apply_overrides, build, read_yaml, require
from lvjob.models.registry import MODEL_NAMES

PROFILES_DIR = Path("slurm")
# Fields holding one path each; every entry of `binds` and every value of `env` is expanded too.
PATH_FIELDS = ("model_path", "runs_root", "results_dir", "image")
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# What a run may log to besides its records (lvjob.run.tracking), and how the profile's list reaches the runner.
TRACKING_BACKENDS = ("tensorboard", "wandb")
DEFAULT_BACKENDS = ("tensorboard",)
TRACKING_ENV = "LVJOB_TRACKING"  # the profile's list, comma-separated, as the runner sees it
WANDB_FORWARDED = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY")  # the user's W&B choices, never credentials


@dataclass(frozen=True)
class Pull:
    """Where `make pull` copies results from (rsync over ssh)."""

    host: str | None = None  # e.g. login.cluster.example.org (an ssh alias works too)
    path: str | None = None  # the project folder on the cluster, holding runs_root and results_dir (relative ones)


@dataclass(frozen=True)
class Profile:
    name: str = "local"
    executor: Literal["local", "slurm"] = "local"

    # the study as this profile runs it
    scale: str | None = None  # a named scale of the study file (e.g. demo); None = full
    model: str | None = None  # overrides the study's model (e.g. tiny)
    model_path: str | None = None  # folder holding the staged Qwen2.5 weights (compute nodes have no internet)
    quantize_4bit: bool = False
    device: str = "auto"
    runs_root: str = "checkpoints"  # run directories, the study's records and submitit's logs
    results_dir: str = "results"

    # resources per job
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    mem_gb: float | None = None
    timeout_min: int = 60  # one time-limit window; training spans several through requeues
    max_num_timeout: int = 50  # requeues after a time limit before submitit gives up
    max_parallel: int = 2  # local: jobs running at once (each uses cpus_per_task threads)
    # none: every stage a job array, chained through retry gates (fan-out); study: the whole study in one
    # GPU job, at most runs_per_gpu runs at once on its GPU (lvjob.orchestrate.pack)
    pack: Literal["none", "study"] = "none"
    runs_per_gpu: int = 1
    # What `lvjob plan` assumes a GPU computes, for its estimate of GPU time: 30% of an A100's 312 TFLOP/s
    # dense bf16 peak by default; set it from `make bench-gpu`'s measured rate on your cluster's GPU.
    expected_tflops: float = 94.0
    # Times a retry gate resubmits a run whose job ended with the run incomplete (a crash, an OOM
    # kill, a node lost), per run; a user's cancel is never retried (lvjob.orchestrate.retries).
    max_retries: int = 2
    # The watchdog (lvjob.cluster.supervise): a run silent for longer than watchdog_multiple x its longest
    # gap between heartbeats so far, and at least watchdog_floor_s, is hung: its stacks are dumped into
    # its log and it is killed (a crash, retried as one).
    watchdog_floor_s: float = 600.0
    watchdog_multiple: float = 10.0

    # SLURM only
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    signal_delay_s: int = 120  # USR2 this long before the time limit: time to write a checkpoint
    array_parallelism: int = 16
    sbatch: dict[str, str] = field(default_factory=dict)  # any other sbatch option, e.g. {exclude: node3}

    # Apptainer
    image: str | None = None  # .sif file; None runs the project's own Python directly
    container: str = "apptainer"  # the command that runs the image (apptainer, singularity)
    binds: tuple[str, ...] = ()  # extra --bind entries: "/scratch", "/data:/data:ro"
    env: dict[str, str] = field(default_factory=dict)  # environment of every job, e.g. HF_HOME

    # what each run logs to besides its records (lvjob.run.tracking): tensorboard, wandb (the optional extra)
    tracking: tuple[str, ...] = DEFAULT_BACKENDS

    pull: Pull = field(default_factory=Pull)

    def __post_init__(self) -> None:
        require(self.model is None or self.model in MODEL_NAMES, "model", self.model, ", ".join(MODEL_NAMES) + " or null")
        for key in ("cpus_per_task", "timeout_min", "max_parallel", "array_parallelism", "runs_per_gpu"):
            require(getattr(self, key) >= 1, key, getattr(self, key), "integers >= 1")
        for key in ("gpus_per_node", "max_num_timeout", "signal_delay_s", "max_retries"):
            require(getattr(self, key) >= 0, key, getattr(self, key), "integers >= 0")
        require(self.watchdog_floor_s > 0, "watchdog_floor_s", self.watchdog_floor_s, "seconds > 0 (default 600)")
        require(self.watchdog_multiple >= 1, "watchdog_multiple", self.watchdog_multiple, "a number >= 1 (default 10)")
        require(self.mem_gb is None or self.mem_gb > 0, "mem_gb", self.mem_gb, "a number > 0, or null for the cluster's default")
        require(self.signal_delay_s < self.timeout_min * 60, "signal_delay_s", self.signal_delay_s,
                f"less than the time limit ({self.timeout_min * 60} s)")
        require(self.pack == "none" or self.executor == "slurm", "pack", self.pack,
                "none with the local executor (it runs the whole study in one process tree already)")
        require(self.expected_tflops > 0, "expected_tflops", self.expected_tflops, "TFLOP/s > 0 (default 94)")
        for b in self.binds:
            require(bool(b) and not b.startswith(":"), "binds", b, "entries like /scratch or /src:/dst[:ro]")
        require(not unknown_backends(self.tracking) and len(set(self.tracking)) == len(self.tracking), "tracking",
                list(self.tracking), f"a list of {', '.join(TRACKING_BACKENDS)}, each at most once (e.g. [tensorboard, wandb])")


def stall_rule(profile: Profile) -> StallRule:
    return StallRule(profile.watchdog_floor_s, profile.watchdog_multiple)


def profile_path(name_or_path: str | Path) -> Path:
    """`local` -> slurm/local.yaml; a path to a .yaml file is used as it is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p
    return PROFILES_DIR / f"{name_or_path}.yaml"


def load_profile(name_or_path: str | Path, overrides: Sequence[str] = ()) -> Profile:
    path = profile_path(name_or_path)
    if not path.exists():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")) if PROFILES_DIR.is_dir() else []
        raise ConfigError(f"{path}: no such profile; valid: {', '.join(known) or 'a path to a profile .yaml file'}")
    raw = expand_paths(apply_overrides(read_yaml(path), overrides), where=str(path))
    raw.setdefault("name", path.stem)
    return build(Profile, raw, where=str(path))


def expand_paths(raw: dict, where: str) -> dict:
    """`raw` with `$VAR`/`${VAR}` expanded in every path field; values of the wrong type are left to `build` to refuse."""
    out = dict(raw)
    for key in PATH_FIELDS:
        if isinstance(out.get(key), str):
            out[key] = expand_vars(out[key], key, where)
    if isinstance(out.get("binds"), list):
        out["binds"] = [_expand_any(b, f"binds[{i}]", where) for i, b in enumerate(out["binds"])]
    if isinstance(out.get("env"), dict):
        out["env"] = {k: _expand_any(v, f"env.{k}", where) for k, v in out["env"].items()}
    return out


def _expand_any(value, key: str, where: str):
    return expand_vars(value, key, where) if isinstance(value, str) else value


def expand_vars(value: str, key: str, where: str) -> str:
    """`value` with each `$VAR` and `${VAR}` replaced from the environment; an unset or empty one is
    refused (an empty $SCRATCH would silently turn /scratch/me/runs into /me/runs)."""
    def substitute(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if not os.environ.get(name):
            raise ConfigError(f"{where}: {key}: {value!r} uses ${name}, which is {'empty' if name in os.environ else 'not set'} "
                              f"in this environment; set it (export {name}=...) or write the path out")
        return os.environ[name]

    return _VAR.sub(substitute, value)


def bind_list(profile: Profile, workdir: Path, cache: Path) -> list[str]:
    """What a job inside the image must see: the project folder (data, runs, results), the lvjob cache,
    the staged model, and the profile's own binds; each once, in that order."""
    binds = [str(workdir), str(cache)]
    if profile.model_path:
        binds.append(str(profile.model_path))
    binds += list(profile.binds)
    seen: list[str] = []
    for b in binds:
        if b not in seen:
            seen.append(b)
    return seen


def unknown_backends(names) -> list[str]:
    return [n for n in names if n not in TRACKING_BACKENDS]


def tracking_env(backends: tuple[str, ...], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What the runner must be given to track as the profile says: the list, and the user's W&B choices when W&B is on."""
    env = {TRACKING_ENV: ",".join(backends)}
    if "wandb" in backends:
        env |= {key: environ[key] for key in WANDB_FORWARDED if environ.get(key)}
    return env


def runner_env(profile: Profile, cache: Path) -> dict[str, str]:
    """The variables a runner needs, passed explicitly (into the image through --env)."""
    env = {"LVJOB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1",
           "OMP_NUM_THREADS": str(profile.cpus_per_task)} | tracking_env(profile.tracking)
    if os.environ.get("SLURM_JOB_ID"):
        env["SLURM_JOB_ID"] = os.environ["SLURM_JOB_ID"]  # names the run lock's holder
    return env | dict(profile.env)


def ready_file(job_file: Path) -> Path:
    """Where the runner of `job_file` says it handles the stop signals (lvjob.cluster.supervise): beside the spec."""
    return job_file.with_suffix(".ready")


def runner_command(profile: Profile, workdir: Path, cache: Path, job_file: Path) -> list[str]:
    """The child that runs one job: the project's Python, or the same inside the image."""
    if profile.image is None:
        import sys

        return [sys.executable, "-m", "lvjob", "run", str(job_file)]
    cmd = [profile.container, "exec"] + (["--nv"] if profile.gpus_per_node > 0 else []) + ["--cleanenv"]
    for key, value in (runner_env(profile, cache) | {READY_FILE: str(ready_file(job_file))}).items():
        cmd += ["--env", f"{key}={value}"]
    for b in bind_list(profile, workdir, cache):
        cmd += ["--bind", b]
    return cmd + ["--pwd", str(workdir), profile.image, "python", "-m", "lvjob", "run", str(job_file)]
