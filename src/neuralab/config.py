"""Run configuration: frozen dataclasses, TOML presets and ``a.b=c`` overrides.

Precedence is defaults < TOML file < command-line overrides. Every key is
checked: an unknown key or a value of the wrong type is a one-line
``UserError`` naming the key and what is allowed. The resolved config is saved
as ``config.toml`` in each run directory, and ``neuralab train runs/x/config.toml``
repeats the run.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuralab.configfile import (
    PRESETS_DIR,
    bounds,
    check_value,
    choices,
    coerce,
    dict_to_toml,
    merge,
    parse_overrides,
    read_toml,
    resolve_path,
    run_config_path,
    section_values,
)
from neuralab.errors import UserError

SEED_BOUNDS = bounds(0, 2**63 - 1)  # what torch.manual_seed takes

__all__ = [
    "PRESETS_DIR",
    "AdvConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SSLConfig",
    "SchedConfig",
    "TrainConfig",
    "build",
    "choices",
    "coerce",
    "dict_to_toml",
    "load",
    "load_run",
    "merge",
    "parse_overrides",
    "read_toml",
    "resolve_path",
    "section_values",
    "to_dict",
    "to_toml",
]


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    data_dir: str = ""  # "" = $NEURALAB_DATA, then the user cache, then /usr/share/datasets
    val_fraction: float = field(default=0.1, metadata=bounds(0, 1, high_open=True))
    split_seed: int = field(default=0, metadata=bounds(0, 2**63 - 1))
    download: bool = False
    augment: bool = True
    path: str = ""  # a UTF-8 text file to model instead of the named dataset (text runs)
    # text runs: random windows (nanoGPT) or contiguous streams with carried state (char-rnn)
    batching: str = field(default="windows", metadata=choices("windows", "streams"))
    # scene sets (fashion-scenes): the canvas side, how many train + val scenes (val_fraction
    # of them for val, drawn from held-out items) and how many test scenes
    scene_size: int = field(default=96, metadata=bounds(32, 256))
    scenes_train: int = field(default=20000, metadata=bounds(1))
    scenes_test: int = field(default=2000, metadata=bounds(1))
    # clip sets (moving-fashion): what decides the class, frames per clip, the frame's side,
    # and how many train + val clips (split as scenes are) and test clips; the test videos
    # (0: none), each as long as video_frames, whose every window of `frames` frames is one
    # of its clips
    variant: str = field(default="motion", metadata=choices("motion", "appearance", "mixed"))
    frames: int = field(default=16, metadata=bounds(4, 64))
    clip_size: int = field(default=64, metadata=bounds(16, 256))
    clips_train: int = field(default=8000, metadata=bounds(1))
    clips_test: int = field(default=2000, metadata=bounds(1))
    video_frames: int = field(default=24, metadata=bounds(4, 64))
    videos_test: int = field(default=500, metadata=bounds(0))
    # text runs (language models): read characters, or byte-level BPE tokens learnt from the
    # train split (data.vocab_size of them)
    tokenizer: str = field(default="char", metadata=choices("char", "bpe"))
    # labelled and parallel text: the BPE vocabulary learnt from the train texts (special
    # tokens included), and the most tokens of a text a model reads (the rest is cut)
    vocab_size: int = field(default=4000, metadata=bounds(258, 65536))
    max_tokens: int = field(default=96, metadata=bounds(1, 4096))
    # parallel text (bible-en-es, bible-kjv-web): only these books (OSIS names, comma-
    # separated, e.g. "Gen,Ruth,Judg"); "" = every book. The split of a book is fixed.
    books: str = ""
    # labelled text (bible-genre): the English translations whose train-chapter verses train
    # (web, kjv: the King James Version's rendering of the same verses, a paraphrase for
    # free); val and test are always the World English Bible's
    translations: tuple[str, ...] = ("web",)
    # speech sets (spoken-digits, spoken-commands): utterances per split (test: the unseen
    # voices' set and the seen voices' set each), log-mel bands, and the units a CTC model
    # writes (words of the closed vocabulary, or characters)
    utterances_train: int = field(default=6000, metadata=bounds(1))
    utterances_val: int = field(default=600, metadata=bounds(1))
    utterances_test: int = field(default=600, metadata=bounds(1))
    mels: int = field(default=40, metadata=bounds(16, 128))
    units: str = field(default="words", metadata=choices("words", "chars"))
    # with data.augment, each training utterance's frequencies are scaled by a factor drawn
    # log-uniform from [vtlp_low, vtlp_high] (vocal tract length perturbation: above 1, a
    # shorter tract; 1 and 1: none)
    vtlp_low: float = field(default=0.9, metadata=bounds(0.5, 1))
    vtlp_high: float = field(default=1.5, metadata=bounds(1, 2))


@dataclass(frozen=True)
class ModelConfig:
    """``name`` picks a registered model; every other key is that model's own option."""

    name: str = "cnn"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=10, metadata=bounds(1))
    # > 0: stop after this many optimizer steps (overrides epochs)
    max_steps: int = field(default=0, metadata=bounds(0))
    batch_size: int = field(default=128, metadata=bounds(1))
    eval_batch_size: int = field(default=1000, metadata=bounds(1))
    threads: int = field(default=0, metadata=bounds(0))  # 0 = all cores
    # a finished run whose best weights start this one (fine-tuning; its tokenizer too)
    init_from: str = ""
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPUs
    # bf16: matmuls in bfloat16 under autocast (fp32 weights); auto: bf16 on a GPU that has it
    # and on a CPU with bf16 arithmetic (AMX tiles or AVX512-BF16), else fp32;
    # fp16: float16 autocast with a gradient scaler (CUDA only)
    precision: str = field(default="fp32", metadata=choices("fp32", "bf16", "fp16", "auto"))
    # auto: the GPU when PyTorch sees one (the whole step, batches moved to it), else the CPU
    device: str = field(default="auto", metadata=choices("auto", "cpu", "cuda"))
    # split each batch into this many micro-batches, one backward each, one optimizer step:
    # the same update as the whole batch, with a fraction of the activation memory
    accum_steps: int = field(default=1, metadata=bounds(1))
    compile: bool = False  # torch.compile the model for training (checkpoints stay eager)
    label_smoothing: float = field(default=0.0, metadata=bounds(0, 1, high_open=True))
    # classification: weigh each class's loss by N / (classes · its train examples)
    # ("balanced", as scikit-learn's class_weight), which favours macro-F1 over accuracy
    class_weights: str = field(default="none", metadata=choices("none", "balanced"))
    grad_clip: float = field(default=0.0, metadata=bounds(0))  # max global grad norm; 0 = off
    # EMA decay of the weights (e.g. 0.999); 0 = off
    ema: float = field(default=0.0, metadata=bounds(0, 1, high_open=True))
    # the validation metric that picks the best checkpoint: one the run's kind measures
    # (neuralab.tasks: Task.monitors); higher is better for an accuracy or an IoU, lower for
    # a loss (Task.higher_is_better)
    monitor: str = "val/acc"
    # stop after this many validations without improvement; 0 = off
    early_stopping: int = field(default=0, metadata=bounds(0))
    # validate every N steps; 0 = at the end of each epoch
    val_every: int = field(default=0, metadata=bounds(0))
    log_every: int = field(default=50, metadata=bounds(1))
    # also save `last` every N steps; 0 = at each validation
    checkpoint_every: int = field(default=0, metadata=bounds(0))


@dataclass(frozen=True)
class OptimConfig:
    name: str = field(default="adamw", metadata=choices("adamw", "sgd"))
    lr: float = field(default=1e-3, metadata=bounds(0, low_open=True))
    weight_decay: float = field(default=5e-4, metadata=bounds(0))
    momentum: float = field(default=0.9, metadata=bounds(0, 1, high_open=True))  # SGD only
    nesterov: bool = True  # SGD only
    beta1: float = field(default=0.9, metadata=bounds(0, 1, high_open=True))  # AdamW only
    beta2: float = field(default=0.999, metadata=bounds(0, 1, high_open=True))  # AdamW only


@dataclass(frozen=True)
class SchedConfig:
    name: str = field(
        default="cosine", metadata=choices("cosine", "linear", "onecycle", "constant")
    )
    # fraction of all steps spent warming up (cosine, linear; onecycle: 0.3)
    warmup: float = field(default=0.02, metadata=bounds(0, 1))
    # as a fraction of optim.lr, reached at the last step (cosine, linear)
    min_lr: float = field(default=0.0, metadata=bounds(0, 1))


@dataclass(frozen=True)
class AdvConfig:
    """Adversarial training (off by default); eps and alpha are in [0, 1] pixel units."""

    method: str = field(default="none", metadata=choices("none", "pgd", "fgsm", "trades"))
    eps: float = field(default=0.1, metadata=bounds(0))
    # step; 0 = default: pgd/trades 2.5*eps/steps, fgsm 1.25*eps
    alpha: float = field(default=0.0, metadata=bounds(0))
    # attack steps per training batch (pgd, trades)
    steps: int = field(default=7, metadata=bounds(1))
    # weight of the robustness (KL) term in TRADES
    trades_beta: float = field(default=6.0, metadata=bounds(0))
    # validation images attacked at each validation (robust accuracy)
    val_n: int = field(default=1000, metadata=bounds(1))
    # PGD steps for the validation robust accuracy
    val_steps: int = field(default=10, metadata=bounds(1))


@dataclass(frozen=True)
class SSLConfig:
    """Self-supervised pretraining (off by default): the pretext task and its settings."""

    method: str = field(default="none", metadata=choices("none", "simclr", "nnclr", "dae", "mae"))
    # simclr, nnclr: softmax temperature of the contrastive loss
    temperature: float = field(default=0.2, metadata=bounds(0, low_open=True))
    # simclr, nnclr: output size of the projection head
    proj_dim: int = field(default=128, metadata=bounds(1))
    # projection-head / decoder hidden width
    hidden_dim: int = field(default=512, metadata=bounds(1))
    # simclr, nnclr: smallest area fraction of a random resized crop
    crop_scale: float = field(default=0.3, metadata=bounds(0, 1, low_open=True))
    # simclr, nnclr: brightness/contrast jitter strength
    jitter: float = field(default=0.4, metadata=bounds(0))
    # nnclr: projections of earlier batches searched for positives
    support_size: int = field(default=8192, metadata=bounds(1))
    noise: str = field(default="gaussian", metadata=choices("gaussian", "masking"))  # dae
    # dae: Gaussian std, or the fraction of pixels zeroed
    noise_level: float = field(default=0.3, metadata=bounds(0))
    # mae: fraction of patches hidden
    mask_ratio: float = field(default=0.6, metadata=bounds(0, 1, low_open=True, high_open=True))
    # mae: side of a masked patch (the ViT's own patch size for a ViT)
    patch_size: int = field(default=4, metadata=bounds(1))
    # kNN monitor: neighbours
    knn_k: int = field(default=20, metadata=bounds(1))
    # kNN monitor: weight exp(cos / t) per neighbour
    knn_temperature: float = field(default=0.07, metadata=bounds(0, low_open=True))
    # kNN monitor: training images in the memory bank (0 = all)
    knn_bank: int = field(default=10000, metadata=bounds(0))


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


def build(values: dict[str, Any]) -> RunConfig:
    """A validated ``RunConfig`` from a nested dict (as read from TOML)."""
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key == "seed":
            kwargs["seed"] = check_value("seed", coerce("seed", value, int), SEED_BOUNDS)
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


def load(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults < TOML file (a path or a preset name) < ``key=value`` overrides."""
    values = read_toml(resolve_path(path)) if path is not None else {}
    return build(merge(values, parse_overrides(overrides or [])))


def load_run(run_dir: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """The resolved config saved in a run directory (plus optional overrides)."""
    return load(run_config_path(run_dir), overrides)


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


def to_toml(cfg: RunConfig) -> str:
    """The resolved config as TOML text that ``load`` reads back to an equal config."""
    return dict_to_toml(to_dict(cfg))
