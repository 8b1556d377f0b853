"""`make pull`: copy a cluster's run directories and results here (rsync over ssh), for plotting.

Only results and logs come by default: the run directories without their `checkpoints/` folders
(training state, large) and without submitit's pickles; `--checkpoints` brings those too. Nothing
local is ever deleted (no --delete): files pulled again are updated, others are left alone. Every study's
results folder comes, and `results_dir` becomes the cluster's link to the one aggregated last (a local
folder there, from an older lvjob, is moved beside them first).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lvjob.core.config import ConfigError
from lvjob.cluster.profile import Profile
from lvjob.core.paths import results_variants
from lvjob.results.aggregate import make_way


def _remote(profile: Profile, rel: str) -> str:
    """`host:path/rel` (or a local `path/rel` when the profile names no host); rel may be absolute."""
    base = profile.pull.path
    where = rel if Path(rel).is_absolute() else f"{base.rstrip('/')}/{rel}"
    return f"{profile.pull.host}:{where}" if profile.pull.host else where


def rsync_commands(profile: Profile, checkpoints: bool = False) -> list[list[str]]:
    if not profile.pull.path:
        raise ConfigError(f"profile {profile.name}: pull.path is not set; valid: the project folder on the cluster, "
                          "with pull.host the ssh host (e.g. pull: {host: login.cluster.org, path: /home/me/lvjob})")
    runs_filter = [] if checkpoints else ["--exclude=/*/checkpoints/", "--exclude=*.pkl"]
    variants, rsync = str(results_variants(profile.results_dir)), ["rsync", "-a", "--human-readable"]
    return [
        [*rsync, *runs_filter, f"{_remote(profile, profile.runs_root)}/", f"{profile.runs_root}/"],
        [*rsync, "--ignore-missing-args", f"{_remote(profile, variants)}/", f"{variants}/"],  # every study's results
        # results_dir itself: the link to the study aggregated last (or an older lvjob's results folder)
        [*rsync, "--ignore-missing-args", _remote(profile, str(Path(profile.results_dir))),  # no trailing slash: the link
         f"{Path(profile.results_dir).parent}/"],
    ]


def pull(profile: Profile, checkpoints: bool = False, log=print) -> None:
    if shutil.which("rsync") is None:
        raise FileNotFoundError("rsync is not installed here; install it (e.g. apt-get install rsync) to pull results")
    runs, variants, latest = rsync_commands(profile, checkpoints)
    make_way(profile.results_dir, log)  # rsync cannot put a link where a folder is
    for cmd in (runs, variants, latest):
        Path(cmd[-1]).mkdir(parents=True, exist_ok=True)
        log(" ".join(cmd))
        subprocess.run(cmd, check=True)
