"""Where lvjob keeps built artefacts (tokenizer, tiny model) that are made once and reused."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder: $LVJOB_CACHE, else ~/.cache/lvjob.

    On a cluster, point LVJOB_CACHE at a shared filesystem so compute nodes reuse what the
    login node built.
    """
    env = os.environ.get("LVJOB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lvjob"
