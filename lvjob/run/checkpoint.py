"""Training checkpoints (SPEC §6): written whole or not at all, verified when read.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` in the run directory holding the adapter
weights (safetensors), optimizer + scheduler state, every RNG state, the training state (step, data
order position, FLOP ledger) and the metrics rows so far, plus a manifest of SHA-256 digests. It is
written into a temporary folder and renamed into place, so a kill at any instant leaves either no
new checkpoint or a complete one. Older ones are deleted only after the new one is in place, and by
validity, not name: the newest `keep` whose files match their manifest stay, so the only valid
checkpoint is never deleted, whatever the names of unusable ones beside it.

Loading goes newest first; a checkpoint that fails its manifest (damaged) or that matches it but
cannot be read by this version (written by another one) is skipped, saying which, and the one
before it is used. Everything is read with safetensors or
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lvjob.core.atomic import atomic_dir
from lvjob.core.paths import RunDir

PREFIX = "step-"
FILES = ("adapter.safetensors", "optimizer.pt", "rng.pt", "state.json", "metrics.jsonl")


@dataclass
class Checkpoint:
    step: int
    path: Path
    adapter: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    rng: dict
    state: dict  # step, data_position, ledger, ...
    metrics: list[dict]


def folder(run_dir: Path) -> Path:
    return RunDir(run_dir).checkpoints


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders start with '.' and are skipped)."""
    root = folder(run_dir)
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def remove_partial_writes(run_dir: Path) -> None:
    """Delete temporary folders a kill left behind mid-write (they were never renamed into place)."""
    root = folder(run_dir)
    if root.exists():
        for p in root.iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(run_dir: Path, step: int, adapter: dict[str, torch.Tensor], optimizer: dict, scheduler: dict,
         state: dict, metrics: list[dict], keep: int = 2) -> Path:
    dest = folder(run_dir) / f"{PREFIX}{step:07d}"
    with atomic_dir(dest) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in adapter.items()}, tmp / "adapter.safetensors")
        torch.save({"optimizer": optimizer, "scheduler": scheduler}, tmp / "optimizer.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
        (tmp / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
        manifest = {name: _sha256(tmp / name) for name in FILES}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    prune(run_dir, keep)
    return dest


def prune(run_dir: Path, keep: int) -> None:
    """Delete every checkpoint but the newest `keep` intact ones."""
    every = list_checkpoints(run_dir)
    intact = [p for p in reversed(every) if damage(p) is None][:keep]
    for old in every:
        if old not in intact:
            shutil.rmtree(old, ignore_errors=True)


def damage(path: Path) -> str | None:
    """What is wrong with the checkpoint's files against its manifest, or None if they match."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        for name in FILES:
            if manifest.get(name) != _sha256(path / name):
                return f"{path / name}: contents do not match the manifest"
    except (OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None


class Damaged(ValueError):
    """The checkpoint's files do not match its manifest."""


def load(path: Path) -> Checkpoint:
    """Read and verify one checkpoint; raises Damaged if its files do not match its manifest."""
    if (why := damage(path)) is not None:
        raise Damaged(why)
    opt = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    state = json.loads((path / "state.json").read_text())
    metrics = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line]
    return Checkpoint(
        step=int(state["step"]), path=path, adapter=load_file(path / "adapter.safetensors"),
        optimizer=opt["optimizer"], scheduler=opt["scheduler"],
        rng=torch.load(path / "rng.pt", weights_only=True), state=state, metrics=metrics,
    )


def load_latest(run_dir: Path) -> Checkpoint | None:
    """The newest readable checkpoint; unreadable ones are reported on stderr and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load(path)
        except Damaged as e:
            print(f"WARNING: checkpoint {path} is damaged ({e}) and is skipped; falling back to the previous one",
                  file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 - intact bytes that this torch/safetensors cannot read
            print(f"WARNING: checkpoint {path} is intact but was written by another version and cannot be read by this "
                  f"one ({type(e).__name__}: {' '.join(str(e).split())[:200]}); skipped", file=sys.stderr, flush=True)
    return None
