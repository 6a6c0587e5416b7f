"""Run configuration: frozen dataclasses, TOML presets and ``a.b=c`` overrides.

Precedence is defaults < TOML file < command-line overrides. Every key is
checked: an unknown key or a value of the wrong type is a one-line
``UserError`` naming the key and what is allowed. The resolved config is saved
as ``config.toml`` in each run directory, and ``neuralab train runs/x/config.toml``
repeats the run.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuralab import runs
from neuralab.errors import UserError

PRESETS_DIR = Path(__file__).parent / "configs"


def choices(*values: str) -> dict[str, tuple[str, ...]]:
    """Field metadata: the values a string option may take (checked by ``section_values``)."""
    return {"choices": values}


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    data_dir: str = ""  # "" = $NEURALAB_DATA, then the user cache, then /usr/share/datasets
    val_fraction: float = 0.1
    split_seed: int = 0
    download: bool = False
    augment: bool = True
    path: str = ""  # a UTF-8 text file to model instead of the named dataset (text runs)
    # text runs: random windows (nanoGPT) or contiguous streams with carried state (char-rnn)
    batching: str = field(default="windows", metadata=choices("windows", "streams"))


@dataclass(frozen=True)
class ModelConfig:
    """``name`` picks a registered model; every other key is that model's own option."""

    name: str = "cnn"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    max_steps: int = 0  # > 0: stop after this many optimizer steps (overrides epochs)
    batch_size: int = 128
    eval_batch_size: int = 1000
    threads: int = 0  # 0 = all cores
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPUs
    # bf16: matmuls in bfloat16 under autocast (fp32 weights); auto: bf16 on a GPU that has it
    # and on a CPU with AMX bfloat16 tiles, else fp32;
    # fp16: float16 autocast with a gradient scaler (CUDA only)
    precision: str = field(default="fp32", metadata=choices("fp32", "bf16", "fp16", "auto"))
    # auto: the GPU when PyTorch sees one (the whole step, batches moved to it), else the CPU
    device: str = field(default="auto", metadata=choices("auto", "cpu", "cuda"))
    # split each batch into this many micro-batches, one backward each, one optimizer step:
    # the same update as the whole batch, with a fraction of the activation memory
    accum_steps: int = 1
    compile: bool = False  # torch.compile the model for training (checkpoints stay eager)
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    ema: float = 0.0  # EMA decay of the weights (e.g. 0.999); 0 = off
    # the validation metric that picks the best checkpoint: one the run's kind measures
    # (neuralab.tasks: Task.monitors); higher is better for an accuracy, lower for the rest
    monitor: str = "val/acc"
    early_stopping: int = 0  # stop after this many validations without improvement; 0 = off
    val_every: int = 0  # validate every N steps; 0 = at the end of each epoch
    log_every: int = 50
    checkpoint_every: int = 0  # also save `last` every N steps; 0 = at each validation


@dataclass(frozen=True)
class OptimConfig:
    name: str = field(default="adamw", metadata=choices("adamw", "sgd"))
    lr: float = 1e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9  # SGD only
    nesterov: bool = True  # SGD only
    beta1: float = 0.9  # AdamW only
    beta2: float = 0.999  # AdamW only


@dataclass(frozen=True)
class SchedConfig:
    name: str = field(
        default="cosine", metadata=choices("cosine", "linear", "onecycle", "constant")
    )
    warmup: float = 0.02  # fraction of all steps spent warming up (cosine, linear; onecycle: 0.3)
    min_lr: float = 0.0  # as a fraction of optim.lr, reached at the last step (cosine, linear)


@dataclass(frozen=True)
class AdvConfig:
    """Adversarial training (off by default); eps and alpha are in [0, 1] pixel units."""

    method: str = field(default="none", metadata=choices("none", "pgd", "fgsm", "trades"))
    eps: float = 0.1
    alpha: float = 0.0  # step; 0 = default: pgd/trades 2.5*eps/steps, fgsm 1.25*eps
    steps: int = 7  # attack steps per training batch (pgd, trades)
    trades_beta: float = 6.0  # weight of the robustness (KL) term in TRADES
    val_n: int = 1000  # validation images attacked at each validation (robust accuracy)
    val_steps: int = 10  # PGD steps for the validation robust accuracy


@dataclass(frozen=True)
class SSLConfig:
    """Self-supervised pretraining (off by default): the pretext task and its settings."""

    method: str = field(default="none", metadata=choices("none", "simclr", "nnclr", "dae", "mae"))
    temperature: float = 0.2  # simclr, nnclr: softmax temperature of the contrastive loss
    proj_dim: int = 128  # simclr, nnclr: output size of the projection head
    hidden_dim: int = 512  # projection-head / decoder hidden width
    crop_scale: float = 0.3  # simclr, nnclr: smallest area fraction of a random resized crop
    jitter: float = 0.4  # simclr, nnclr: brightness/contrast jitter strength
    support_size: int = 8192  # nnclr: projections of earlier batches searched for positives
    noise: str = field(default="gaussian", metadata=choices("gaussian", "masking"))  # dae
    noise_level: float = 0.3  # dae: Gaussian std, or the fraction of pixels zeroed
    mask_ratio: float = 0.6  # mae: fraction of patches hidden
    patch_size: int = 4  # mae: side of a masked patch (the ViT's own patch size for a ViT)
    knn_k: int = 20  # kNN monitor: neighbours
    knn_temperature: float = 0.07  # kNN monitor: weight exp(cos / t) per neighbour
    knn_bank: int = 10000  # kNN monitor: training images in the memory bank (0 = all)


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    # the kind of run (a name in neuralab.tasks.TASKS); "auto": the kind the sections imply
    # (text data: language_model; ssl.method: that pretext task; adv.method: adversarial;
    # else classify)
    task: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    adv: AdvConfig = field(default_factory=AdvConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)


_SECTION_CLASSES = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "optim": OptimConfig,
    "sched": SchedConfig,
    "adv": AdvConfig,
    "ssl": SSLConfig,
}


# ----------------------------------------------------------------------------- coercion


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
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
    """Coerced ``values`` for the ``[section]`` dataclass ``cls``; checks keys, types, choices."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise UserError(f"unknown config key '{section}.{key}'; valid keys: {valid}")
        value = coerce(f"{section}.{key}", value, hints[key])
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise UserError(
                f"config key '{section}.{key}' must be one of {', '.join(choices)}; got {value!r}"
            )
        out[key] = value
    return out


def _model_section(values: dict[str, Any]) -> ModelConfig:
    from neuralab.models import MODELS, model_config_class

    name = values.pop("name", ModelConfig.name)
    if not isinstance(name, str):
        raise UserError(f"config key 'model.name' must be a string, got {name!r}")
    MODELS.get(name)
    cls = model_config_class(name)
    hints = typing.get_type_hints(cls)
    data_given = {"num_classes", "in_channels", "image_size", "mean", "std"}
    allowed = {f.name for f in dataclasses.fields(cls)} - data_given
    options = {}
    for key, value in values.items():
        if key not in allowed:
            valid = ", ".join(sorted(allowed | {"name"}))
            raise UserError(f"unknown config key 'model.{key}' for model {name!r}; valid: {valid}")
        options[key] = coerce(f"model.{key}", value, hints[key])
    return ModelConfig(name=name, options=options)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        parts = dotted.split(".")
        if len(parts) > 2 or not all(parts):
            raise UserError(f"bad config key {dotted!r}; use 'section.key', e.g. optim.lr")
        if len(parts) == 1:
            nested[parts[0]] = value
        else:
            nested.setdefault(parts[0], {})[parts[1]] = value
    return nested


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, section by section (nested dicts as read from TOML)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            if key == "model" and "name" in value and value["name"] != out[key].get("name"):
                out[key] = {}  # another model: the old model's options no longer apply
            out[key].update(value)
        else:
            out[key] = value
    return out


def build(values: dict[str, Any]) -> RunConfig:
    """A validated ``RunConfig`` from a nested dict (as read from TOML)."""
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key == "seed":
            kwargs["seed"] = coerce("seed", value, int)
        elif key == "task":
            kwargs["task"] = coerce("task", value, str)
        elif key in _SECTION_CLASSES:
            if not isinstance(value, dict):
                raise UserError(f"config key {key!r} must be a [{key}] section")
            if key == "model":
                kwargs[key] = _model_section(dict(value))
            else:
                cls = _SECTION_CLASSES[key]
                kwargs[key] = cls(**section_values(key, cls, value))
        else:
            valid = ", ".join(["seed", "task", *_SECTION_CLASSES])
            raise UserError(f"unknown config key {key!r}; valid top-level keys: {valid}")
    return RunConfig(**kwargs)


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


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: not valid TOML: {err}") from None
    except OSError as err:
        raise UserError(f"cannot read config {path}: {err.strerror}") from None


def load(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults < TOML file (a path or a preset name) < ``key=value`` overrides."""
    values = read_toml(resolve_path(path)) if path is not None else {}
    return build(merge(values, parse_overrides(overrides or [])))


def load_run(run_dir: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """The resolved config saved in a run directory (plus optional overrides)."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a neuralab run directory (it has no config.toml)")
    return load(path, overrides)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Nested plain dict; model options are flattened into the [model] section."""
    out: dict[str, Any] = {"seed": cfg.seed, "task": cfg.task}
    for name in _SECTION_CLASSES:
        section = getattr(cfg, name)
        if name == "model":
            out[name] = {"name": section.name, **section.options}
        else:
            out[name] = dataclasses.asdict(section)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(cfg: RunConfig) -> str:
    """The resolved config as TOML text that ``load`` reads back to an equal config."""
    return dict_to_toml(to_dict(cfg))


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
