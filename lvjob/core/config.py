"""YAML -> typed, frozen dataclasses, in one place.

Every config (study, job, profile) is a dataclass tree. `read_yaml` reads YAML with `yaml.safe_load`,
`apply_overrides` applies `key.sub=value` overrides, and `build` builds the tree field by field: an unknown key, a value of
the wrong type, or a value a dataclass's `__post_init__` rejects is refused before any work starts,
with the file, the dotted key and what would be valid.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, field or override that cannot be used; the message says which and why.

    `rule` is the (key, value, valid) of a range rule that refused it, when one did.
    """

    def __init__(self, message: str, rule: tuple[str, Any, str] | None = None):
        super().__init__(message)
        self.rule = rule


class RangeError(ValueError):
    """A value a dataclass's `__post_init__` rule refuses (see `require`)."""

    def __init__(self, key: str, value: Any, valid: str):
        super().__init__(f"{key}: {value!r} is out of range; valid: {valid}")
        self.key, self.value, self.valid = key, value, valid


def require(ok: bool, key: str, value: Any, valid: str) -> None:
    """For `__post_init__` range checks: raise a RangeError naming the key, the value and what is valid."""
    if not ok:
        raise RangeError(key, value, valid)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: Sequence[str], source: str = "override") -> dict:
    """Return a copy of `data` with `a.b=value` overrides applied (values parsed as YAML)."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source} {item!r}: expected key=value, e.g. steps=60 or stage1.lrs=[1e-4,5e-5]")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source} {item!r}: value is not valid YAML: {e}") from None
        set_dotted(out, key, value, source=f"{source} {item!r}")
    return out


def set_dotted(data: dict, key: str, value: Any, source: str = "override") -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {p!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def build(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping; `where` prefixes every message (e.g. 'jobs/study.yaml')."""
    return _build(cls, data, where, prefix="")


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML/JSON-ready values (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def non_default(obj: Any) -> dict:
    """A dataclass tree's settings that differ from their defaults, as plain values: what a key of its settings
    hashes, so that a setting added to the code later (with its default) leaves every key as it was."""
    out = {}
    for f in (f for f in dataclasses.fields(obj) if f.init):
        value = getattr(obj, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(value) and type(default) is type(value):
            if nested := non_default(value):
                out[f.name] = nested
        elif default is dataclasses.MISSING or to_dict(value) != to_dict(default):
            out[f.name] = to_dict(value)
    return out


def _build(cls: type, data: Any, where: str, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {data!r}")
    hints, fields = _schema(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {prefix}{unknown[0]!r}; valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: "
            f"{', '.join(fields)}"
        )
    kwargs = {k: _convert(hints[k], v, where, f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except RangeError as e:
        raise ConfigError(f"{where}: {prefix}{e}", rule=(f"{prefix}{e.key}", e.value, e.valid)) from None
    except ValueError as e:
        raise ConfigError(f"{where}: {prefix}{e}") from None


@functools.lru_cache(maxsize=None)
def _schema(cls: type) -> tuple[dict, dict]:
    """A dataclass's resolved type hints and init fields (resolving them is slow; classes do not change)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _convert(a, value, where, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {key}: {value!r} matches none of {tp}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, prefix=f"{key}.")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key}: {value!r} is not valid; valid: {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_convert(item, v, where, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e17 and 5.0e3 are written as floats in YAML
        raise ConfigError(f"{where}: {key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads 1e-5 (no '.') as a string; accept what is plainly a number.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: {key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: {key}: expected a string, got {value!r}")
    raise TypeError(f"config type {tp!r} for {key} is not supported")


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
