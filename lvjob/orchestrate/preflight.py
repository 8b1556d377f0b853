"""The pre-flight (SPEC §7): everything a study needs, checked on the login node before anything is queued.

`lvjob check STUDY --profile P` runs it alone; `lvjob submit` (lvjob.orchestrate.submission.submit) runs it first
and queues nothing if it finds a problem; the FLOP plan is checked next, by the budget gate there. Each problem is one line naming the field, the value and what would be valid (and, for
a folder it cannot write, the OS's reason, found by trying), so a
typo is found in seconds here instead of hours later by every job on a compute node. Loading the
profile and the study already refuses unknown keys, bad values and unset `$VAR`s in paths.
`cautions` are printed, not refused: e.g. a SLURM profile's output folder on a node-local filesystem.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from lvjob import data
from lvjob.models import modelcheck
from lvjob.models.registry import MODELS
from lvjob.cluster.profile import Profile
from lvjob.core.paths import results_variants
from lvjob.results.aggregate import results_problem
from lvjob.study.spec import Study
from lvjob.run.tracking import INSTALL_WANDB


def problems(study: Study, profile: Profile) -> list[str]:
    """Every reason the study cannot run with this profile; [] when it can."""
    checks = (_gpus, _model, _image, _tracking, _writable_outputs, _data)
    return [line for check in checks for line in check(study, profile)]


def _gpus(study: Study, profile: Profile) -> list[str]:
    if profile.gpus_per_node <= 1:
        return []
    return [f"gpus_per_node: {profile.gpus_per_node}; valid: 0 or 1 (one device per job: the runner trains and "
            "evaluates on one GPU, more would sit idle while charged to the account)"]


def _model(study: Study, profile: Profile) -> list[str]:
    """The staged folder of a model from the hub: verified when the study uses one (compute nodes have no internet)."""
    if not MODELS[study.model].staged:
        return []
    if not profile.model_path:
        if profile.executor == "local":
            return []  # a laptop may read the Hugging Face cache
        return [f"model_path: not set; the study's model {study.model} must be staged for compute nodes without "
                "internet: run `lvjob fetch-model` on the login node and put the line it prints in the profile"]
    return [f"model_path: {line}" for line in modelcheck.problems(profile.model_path, study.model)]


def _image(study: Study, profile: Profile) -> list[str]:
    if profile.image is None:
        return []
    out = []
    if not os.access(profile.image, os.R_OK) or not Path(profile.image).is_file():
        out.append(f"image: {profile.image} is not a readable file; valid: the .sif built by `make container`")
    if shutil.which(profile.container) is None:
        out.append(f"container: {profile.container!r} is not on PATH; valid: the command that runs the image "
                   "(apptainer, or singularity on older sites)")
    return out


def _tracking(study: Study, profile: Profile) -> list[str]:
    """W&B, when the profile lists it, importable by the Python the jobs run (an image's is checked when its job starts)."""
    if "wandb" not in profile.tracking or profile.image is not None or importlib.util.find_spec("wandb") is not None:
        return []
    return [f"tracking: lists wandb, which is not installed in {sys.executable}; {INSTALL_WANDB}"]


def _write_problem(folder: str | Path) -> str | None:
    """Why this user cannot create a file in `folder` (made if missing), in the OS's own words; None if they can.

    Tried, not guessed: permission bits say yes to root almost everywhere, and NFS with root_squash
    or a read-only mount can say no to anyone.
    """
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lvjob-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return e.strerror or str(e)
    return None


def _writable_outputs(study: Study, profile: Profile) -> list[str]:
    """runs_root, and where the results go: each study's folder beside results_dir, which becomes a link to one."""
    link = results_problem(Path(profile.results_dir))
    found = ((key, value, _write_problem(where)) for key, value, where in (
        ("runs_root", profile.runs_root, profile.runs_root),
        ("results_dir", profile.results_dir, results_variants(profile.results_dir))))
    return [f"{key}: {value} cannot be written ({why}); valid: a folder you can write (on a cluster, one every "
            "compute node sees, such as $SCRATCH/...)" for key, value, why in found if why] + ([link] if link else [])


NODE_LOCAL = ("tmpfs", "ramfs")  # filesystem types that live in one machine's memory
NODE_LOCAL_PLACES = ("/tmp", "/dev/shm")


def cautions(study: Study, profile: Profile) -> list[str]:
    """What may go wrong without being an error: output folders of a SLURM profile that compute nodes may not see."""
    if profile.executor != "slurm":
        return []
    return [f"{key}: {value} is on {where}, which other nodes do not see: jobs on compute nodes would write "
            "their runs where the next stage and the aggregate cannot read them; use a shared folder ($SCRATCH/...)"
            for key, value in (("runs_root", profile.runs_root), ("results_dir", profile.results_dir))
            if (where := _node_local(Path(value)))]


def _node_local(path: Path) -> str | None:
    """How `path` is on one machine only (a tmpfs mount, or /tmp, /dev/shm), or None."""
    path = path.resolve()
    for place in NODE_LOCAL_PLACES:
        if path == Path(place) or Path(place) in path.parents:
            return f"{place} (node-local)"
    fstype = _mount_type(path)
    return f"a {fstype} filesystem (node-local)" if fstype in NODE_LOCAL else None


def _mount_type(path: Path) -> str | None:
    """The filesystem type of the mount that holds `path`, from /proc/self/mounts (Linux); None elsewhere."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return None
    holding = [(Path(point), fstype) for point, fstype in mounts if Path(point) == path or Path(point) in path.parents]
    return max(holding, key=lambda m: len(m[0].parts))[1] if holding else None


def _data(study: Study, profile: Profile) -> list[str]:
    path = Path(study.data.path)
    if not path.exists():
        why = _write_problem(path.parent)
        if why is None:
            return []  # generated by `submit` before anything is queued
        return [f"data.path: {path} is missing and its folder cannot be written to generate it ({why})"]
    try:
        lv = data.load(path)
    except (OSError, ValueError) as e:
        return [f"data.path: {e}"]
    if (lv.n_systems, lv.n_points) != (study.data.systems, study.data.points):
        return [f"data.systems/data.points: the study says {study.data.systems} x {study.data.points}, {path} holds "
                f"{lv.n_systems} x {lv.n_points}; valid: the file's own sizes"]
    return []
