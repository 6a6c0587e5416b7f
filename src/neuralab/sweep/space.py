"""A sweep as declared in TOML: the run config every trial starts from, the search space,
and what to optimise.

A sweep file is a run config plus a ``[sweep]`` table. The run config is either the file's
own sections, or the run config named by ``sweep.base`` (a preset or a TOML path) with the
file's sections as overrides on top::

    [sweep]
    name = "fashion_cnn_sweep"      # the study, and runs/<name>/ (default: the file's name)
    base = "fashion_cnn"            # optional: start from this preset or run config
    metric = "val/acc"              # a validation metric; never a test metric
    direction = "maximize"          # default: minimize for losses, else maximize
    sampler = "tpe"                 # tpe | random
    pruner = "median"               # median | none

    [sweep.params]
    "optim.lr" = { low = 1e-4, high = 1e-1, log = true }
    "train.batch_size" = { choices = [64, 128, 256] }
    "model.dropout" = { low = 0.0, high = 0.5, step = 0.1 }

    [train]
    epochs = 5                      # overrides of the base, for every trial

A range suggests integers for an integer config key and floats for a float one (the type
comes from the config itself). Every parameter is checked by building the run config with
it at each end of its range and at each choice, so an unknown key, a wrong type or an
impossible value is a one-line error before any trial starts.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from neuralab import config as config_lib
from neuralab.config import RunConfig
from neuralab.errors import UserError

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")
_SWEEP_KEYS = {
    "name",
    "base",
    "metric",
    "direction",
    "sampler",
    "pruner",
    "seed",
    "heartbeat_interval",
    "grace_period",
    "params",
}
_RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a range (``low``..``high``) or ``choices``."""

    key: str  # a run-config key, e.g. "optim.lr"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    integer: bool = False  # set from the config key's type: suggest_int instead of suggest_float

    def describe(self) -> dict[str, Any]:
        if self.choices:
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Sweep:
    name: str
    config: dict[str, Any]  # run-config values (nested, as read from TOML) every trial starts from
    params: tuple[Param, ...]
    metric: str = "val/acc"
    direction: str = "maximize"
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats
    grace_period: int = 60  # a running trial without a heartbeat this long is marked FAILED

    def signature(self) -> dict[str, Any]:
        """What makes two workers' sweeps the same study (stored with the study)."""
        values = {
            "config": self.config,
            "params": {p.key: p.describe() for p in self.params},
            "metric": self.metric,
            "direction": self.direction,
        }
        return json.loads(json.dumps(values))


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        if section:
            out.setdefault(section, {})[name] = value
        else:
            out[name] = value
    return out


def trial_config(sweep: Sweep, values: dict[str, Any]) -> RunConfig:
    """The run config of a trial: the sweep's config with the parameter ``values`` set."""
    return config_lib.build(config_lib.merge(sweep.config, _nested(values)))


def _lookup(cfg: RunConfig, key: str) -> Any:
    values: Any = config_lib.to_dict(cfg)
    for part in key.split("."):
        values = values[part]
    return values


def _number(key: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"sweep param {key!r}: {name} must be a number, got {value!r}")
    return value


def _param(key: str, spec: Any, sweep: Sweep) -> Param:
    """Parse one ``[sweep.params]`` entry and check it against the run config."""
    if not re.fullmatch(r"(\w+\.)?\w+", key):
        raise UserError(f"sweep param {key!r}: use a run-config key such as 'optim.lr'")
    if not isinstance(spec, dict):
        raise UserError(
            f"sweep param {key!r}: give {{ low = ..., high = ... }} or {{ choices = [...] }}"
        )
    if "choices" in spec:
        extra = set(spec) - {"choices"}
        choices = spec["choices"]
        if extra:
            raise UserError(f"sweep param {key!r}: choices take no {', '.join(sorted(extra))}")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"sweep param {key!r}: choices must be a non-empty list")
        # Optuna stores scalar choices only: a list (``model.widths``) travels as JSON text,
        # which the config reads back as a list
        stored = tuple(json.dumps(c) if isinstance(c, list) else c for c in choices)
        if any(isinstance(c, dict) for c in stored):
            raise UserError(f"sweep param {key!r}: a choice cannot be a table")
        param = Param(key, choices=stored)
        samples = list(choices)
    else:
        unknown = set(spec) - _RANGE_KEYS
        if unknown or not {"low", "high"} <= set(spec):
            raise UserError(
                f"sweep param {key!r}: a range is {{ low, high, log = false, step }} "
                f"or a list is {{ choices = [...] }}; got keys {', '.join(sorted(spec))}"
            )
        low, high = _number(key, "low", spec["low"]), _number(key, "high", spec["high"])
        step = _number(key, "step", spec["step"]) if "step" in spec else None
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise UserError(f"sweep param {key!r}: log must be true or false")
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise UserError(f"sweep param {key!r}: low ({low}) must be below high ({high})")
        if log and low <= 0:
            raise UserError(f"sweep param {key!r}: a log range needs low > 0, got {low}")
        if step is not None and (step <= 0 or log):
            raise UserError(f"sweep param {key!r}: step must be > 0 and cannot go with log")
        param = Param(key, low=low, high=high, log=log, step=step)
        samples = [low, high]
    for value in samples:
        try:
            cfg = trial_config(sweep, {key: value})
        except UserError as err:
            raise UserError(f"sweep param {key!r} = {value!r}: {err}") from None
    if param.choices:
        return param
    kind = type(_lookup(cfg, key))
    if kind is int:
        if not all(float(v).is_integer() for v in (low, high, step or 1)):
            raise UserError(f"sweep param {key!r} is an integer: low, high and step must be too")
        return Param(key, low=int(low), high=int(high), log=log, step=int(step or 1), integer=True)
    if kind is not float:
        raise UserError(f"sweep param {key!r} is not a number; give it {{ choices = [...] }}")
    return param


def _choice(table: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = table.get(key, default)
    if value not in allowed:
        raise UserError(f"sweep.{key} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _positive_int(table: dict[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"sweep.{key} must be a positive integer (seconds); got {value!r}")
    return value


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    """Read a sweep file (a path or a preset name) and check everything before any trial."""
    source = config_lib.resolve_path(path)
    values = config_lib.read_toml(source)
    table = values.pop("sweep", None)
    if not isinstance(table, dict):
        raise UserError(f"{source} has no [sweep] table; it is a run config, not a sweep")
    unknown = set(table) - _SWEEP_KEYS
    if unknown:
        valid = ", ".join(sorted(_SWEEP_KEYS))
        raise UserError(f"unknown key 'sweep.{sorted(unknown)[0]}'; valid keys: {valid}")
    base = table.get("base")
    if base is not None:
        if not isinstance(base, str):
            raise UserError(f"sweep.base must be a preset name or a TOML path, got {base!r}")
        beside = source.parent / base
        base_path = config_lib.resolve_path(beside if beside.is_file() else base)
        base_values = config_lib.read_toml(base_path)
        values = config_lib.merge(base_values, values)
    values = config_lib.merge(values, config_lib.parse_overrides(overrides or []))
    cfg = config_lib.build(values)  # the base itself must be a valid run config

    name = table.get("name", source.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        raise UserError(f"sweep.name must be letters, digits, '_', '-' or '.'; got {name!r}")
    metric = table.get("metric", cfg.train.monitor)
    if not isinstance(metric, str) or not metric.startswith("val/"):
        raise UserError(
            f"sweep.metric must be a validation metric such as val/acc, got {metric!r}: "
            "the test split is never used to choose hyperparameters"
        )
    default_direction = "minimize" if metric.endswith("loss") else "maximize"
    seed = table.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"sweep.seed must be an integer, got {seed!r}")
    sweep = Sweep(
        name=name,
        config=values,
        params=(),
        metric=metric,
        direction=_choice(table, "direction", DIRECTIONS, default_direction),
        sampler=_choice(table, "sampler", SAMPLERS, "tpe"),
        pruner=_choice(table, "pruner", PRUNERS, "median"),
        seed=seed,
        heartbeat_interval=_positive_int(table, "heartbeat_interval", 10),
        grace_period=_positive_int(table, "grace_period", 60),
    )
    if sweep.grace_period <= sweep.heartbeat_interval:
        raise UserError("sweep.grace_period must be longer than sweep.heartbeat_interval")
    params = table.get("params")
    if not isinstance(params, dict) or not params:
        raise UserError(f"{source}: [sweep.params] must declare at least one parameter")
    return replace(sweep, params=tuple(_param(k, v, sweep) for k, v in params.items()))
