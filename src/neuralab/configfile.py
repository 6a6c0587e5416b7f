"""Config files, one section at a time: TOML in and out, ``a.b=c`` overrides, and the checks
of every value: its key, its type (through ``neuralab.runs.coerce``), its choices and its
range. Ground level: the run config (``neuralab.config``) and reinforcement learning's
(``neuralab.rl.config``) are both read, checked and written through these functions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from neuralab import runs
from neuralab.errors import UserError

PRESETS_DIR = Path(__file__).parent / "configs"


def choices(*values: str) -> dict[str, tuple[str, ...]]:
    """Field metadata: the values a string option may take (checked by ``section_values``)."""
    return {"choices": values}


def bounds(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> dict[str, tuple]:
    """Field metadata: the range a number must lie in (checked by ``section_values``), e.g.
    ``bounds(1)`` for >= 1, ``bounds(0, 1, high_open=True)`` for a fraction in [0, 1)."""
    return {"bounds": (low, high, low_open, high_open)}


def _number(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def check_value(key: str, value: Any, metadata: Any) -> Any:
    """``value`` if it is one of the field's choices and inside its bounds, and finite if a
    number; else a one-line UserError naming ``key`` and what it may be."""
    allowed = metadata.get("choices")
    if allowed and value not in allowed:
        raise UserError(f"config key {key!r} must be one of {', '.join(allowed)}; got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"config key {key!r} must be a finite number, got {value!r}")
    if "bounds" in metadata:
        low, high, low_open, high_open = metadata["bounds"]
        below = low is not None and (value <= low if low_open else value < low)
        over = high is not None and (value >= high if high_open else value > high)
        if below or over:
            left = "[" if low is not None and not low_open else "("
            right = "]" if high is not None and not high_open else ")"
            ends = [
                "-inf" if low is None else _number(low),
                "inf" if high is None else _number(high),
            ]
            span = f"{left}{ends[0]}, {ends[1]}{right}"
            raise UserError(f"config key {key!r} must be in {span}, got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        plural = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}
        return f"a list of {plural.get(inner, str(inner))}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from TOML or a ``key=value`` string) to type ``tp``, or a one-line
    ``UserError`` naming ``key`` and the type it takes."""
    try:
        return runs.coerce(value, tp, text=True)
    except TypeError:
        raise UserError(f"config key {key!r} must be {_type_name(tp)}, got {value!r}") from None


def section_values(section: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Coerced ``values`` for the ``[section]`` dataclass ``cls``; checks keys, types, choices
    and ranges (``check_value``)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise UserError(f"unknown config key '{section}.{key}'; valid keys: {valid}")
        dotted = f"{section}.{key}"
        out[key] = check_value(dotted, coerce(dotted, value, hints[key]), fields[key].metadata)
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b.c": v}`` -> ``{"a": {"b": {"c": v}}}``; a key may not be both a value and a table."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        parts = dotted.split(".")
        if not all(parts):
            raise UserError(f"bad config key {dotted!r}; use 'section.key', e.g. optim.lr")
        table = nested
        for depth, part in enumerate(parts[:-1]):
            if part in table and not isinstance(table[part], dict):
                name = ".".join(parts[: depth + 1])
                raise UserError(f"config key {name!r} is given both as a value and as a section")
            table = table.setdefault(part, {})
        if isinstance(table.get(parts[-1]), dict):
            raise UserError(f"config key {dotted!r} is given both as a value and as a section")
        table[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, table by table (nested dicts as read from TOML, merged at every
    depth, so ``env.config.duration=20`` keeps the rest of a preset's ``[env.config]``)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            if key == "model" and "name" in value and value["name"] != out[key].get("name"):
                out[key] = {}  # another model: the old model's options no longer apply
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=2e-3", "train.epochs=5"]`` -> nested dict of strings (coerced later)."""
    flat = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad override {item!r}; write key=value, e.g. optim.lr=2e-3")
        flat[key.strip()] = value
    return _nest(flat)


def resolve_path(path: str | Path) -> Path:
    """A config file path, or the name of a preset shipped with neuralab (``fashion_cnn``)."""
    p = Path(path)
    if p.is_dir() and (p / "config.toml").is_file():
        return p / "config.toml"
    if p.is_file():
        return p
    preset = PRESETS_DIR / f"{p.stem}.toml"
    if p.suffix in ("", ".toml") and p.parent == Path(".") and preset.is_file():
        return preset
    names = ", ".join(sorted(q.stem for q in PRESETS_DIR.glob("*.toml")))
    raise UserError(f"config file {str(path)!r} not found; give a TOML path or a preset: {names}")


def run_config_path(run_dir: str | Path) -> Path:
    """``run_dir/config.toml``, or a one-line UserError when ``run_dir`` is not a run."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a neuralab run directory (it has no config.toml)")
    return path


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: not valid TOML: {err}") from None
    except OSError as err:
        raise UserError(f"cannot read config {path}: {err.strerror}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        items = (f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def dict_to_toml(values: dict[str, Any]) -> str:
    """Plain top-level values, then one ``[section]`` per nested dict, as TOML text."""
    lines = []
    for key, value in values.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in value.items())
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines).lstrip() + "\n"
