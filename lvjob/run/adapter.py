"""A run's LoRA adapter folder (standard PEFT layout): written byte-for-byte reproducibly, found, attached."""

from __future__ import annotations

import json
from pathlib import Path

from lvjob.core.paths import ADAPTER_CONFIG, RunDir


def sort_targets(config: Path) -> None:
    """peft keeps target_modules as a set, written in an order that varies between processes: sort it,
    so the same run gives the same adapter folder byte for byte."""
    settings = json.loads(config.read_text())
    if isinstance(settings.get("target_modules"), list):
        settings["target_modules"] = sorted(settings["target_modules"])
    config.write_text(json.dumps(settings, indent=2, sort_keys=True))  # as peft writes it


def attach(model, adapter: str | Path):
    """`model` with the adapter of a run directory (or a PEFT adapter folder) on top."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder(adapter)))


def folder(adapter: str | Path) -> Path:
    """A run directory's `adapter/`, or a PEFT adapter folder itself."""
    path = Path(adapter)
    if (RunDir(path).adapter / ADAPTER_CONFIG).exists():
        return RunDir(path).adapter
    if (path / ADAPTER_CONFIG).exists():
        return path
    raise FileNotFoundError(f"adapter: {adapter} holds no PEFT adapter (no adapter_config.json in it or in its adapter/)")


def rank(adapter: str | None) -> int:
    """The LoRA rank of an adapter; 0 for none (the base model alone)."""
    if not adapter:
        return 0
    return int(json.loads((folder(adapter) / ADAPTER_CONFIG).read_text())["r"])
