"""The contracts every neuralab model keeps (image classifiers, language models), and the
registry that builds models by name.

timm's idea, smaller: a model class registers under one or more names with default config
values, and ``create_model("resnet20", num_classes=100)`` builds it. Overrides are checked
against the model's config dataclass, so a typo or a wrong type is a one-line ``UserError``
instead of a traceback deep inside ``__init__``.

Images enter every model in [0, 1] and normalisation is the model's first layer. That makes an
adversarial budget eps mean pixel units (as users expect), and a saved model normalises itself.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from neuralab.errors import UserError
from neuralab.registry import Registry
from neuralab.runs import coerce

T = TypeVar("T", bound=nn.Module)

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def check(ok: bool, message: str) -> None:
    """Raise ``UserError(message)`` unless ``ok``: config validation reads as a list of rules."""
    if not ok:
        raise UserError(message)


def check_choice(key: str, value: str, choices: Iterable[str]) -> None:
    """Raise a ``UserError`` naming ``key`` and the allowed values unless ``value`` is one."""
    choices = list(choices)
    check(value in choices, f"{key}={value!r} is not one of: {', '.join(choices)}")


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as the first layer of a model.

    mean and std are persistent buffers, so they travel in the state_dict and a loaded model
    normalises exactly as it did in training.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std  # (B, C, H, W)


@dataclass(frozen=True)
class ImageModelConfig:
    """What every image model needs to know about its data; each model's config subclasses it.

    Fields are int, float, bool, str or tuples of int/float only, so a TOML loader can coerce
    ``key=value`` strings by the field types. mean/std have one value, or one per channel.
    """

    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 28
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        check(self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}")
        check(self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}")
        check(self.image_size >= 1, f"image_size must be >= 1, got {self.image_size}")
        check(
            len(self.mean) in (1, self.in_channels) and len(self.std) == len(self.mean),
            f"mean and std need 1 or in_channels={self.in_channels} values each, "
            f"got {len(self.mean)} and {len(self.std)}",
        )
        check(all(s > 0 for s in self.std), f"std values must be > 0, got {self.std}")


class ImageClassifier(nn.Module):
    """Base of every image model: ``forward(x) = head(forward_features(x))``.

    Subclasses set a ``Config`` class attribute, build their body in ``__init__`` (after calling
    this one) and a ``head`` that is an ``nn.Linear``, and implement ``forward_features``. The
    fixed split lets probes, linear evaluation and attacks work on any registered model.
    """

    Config: ClassVar[type[ImageModelConfig]] = ImageModelConfig
    kind: ClassVar[str] = "image"
    head: nn.Linear

    def __init__(self, config: ImageModelConfig) -> None:
        super().__init__()
        self.config = config
        self.normalize = Normalize(config.mean, config.std)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> (B, D) features that the head maps to logits."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> (B, num_classes) logits."""
        return self.head(self.forward_features(x))  # (B, num_classes)

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of parameters (buffers such as mean/std and BN statistics not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


@dataclass(frozen=True)
class TextModelConfig:
    """What every language model needs to know about its data; each model's config subclasses it.

    ``block_size`` is the context the model is trained on: the size of a GPT's position table,
    and the truncated-backpropagation length of a recurrent model (which can read on past it).
    """

    vocab_size: int = 65
    block_size: int = 64

    def __post_init__(self) -> None:
        check(self.vocab_size >= 2, f"vocab_size must be >= 2, got {self.vocab_size}")
        check(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")


class LanguageModel(nn.Module):
    """Base of every language model: token ids in, next-token logits out.

    ``forward(idx, state)`` maps (B, T) token ids to (B, T, vocab_size) logits and returns the
    state to carry into the next chunk of the same streams: the hidden state of a recurrent
    model (``recurrent = True``), None for a Transformer, which sees only its context window.
    Subclasses set ``Config``, build a token embedding, a body and a ``head`` (an
    ``nn.Linear`` to the vocabulary), and implement ``forward_features``.
    """

    Config: ClassVar[type[TextModelConfig]] = TextModelConfig
    kind: ClassVar[str] = "text"
    recurrent: ClassVar[bool] = False
    head: nn.Linear

    def __init__(self, config: TextModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward_features(self, idx: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """(B, T) token ids -> ((B, T, D) features that the head maps to logits, next state)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features")

    def forward(self, idx: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """(B, T) token ids -> ((B, T, vocab_size) logits, next state)."""
        features, state = self.forward_features(idx, state)
        return self.head(features), state  # (B, T, V)

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of parameters (buffers not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def generate_stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield ``max_new_tokens`` sampled tokens, one (B,) tensor at a time, after the (B, T)
        prompt ``idx``. temperature 0 is greedy decoding; ``top_k`` keeps the k likeliest.

        A recurrent model reads the prompt once and then one token per step with its carried
        state; a Transformer does the same with a cache of its keys and values (GPT's
        ``_next_logits`` says how its context window shifts). Bad arguments fail at the call,
        not at the first token.
        """
        check(idx.ndim == 2 and idx.shape[1] >= 1, "generate needs a (B, T) prompt with T >= 1")
        check(temperature >= 0, f"temperature must be >= 0, got {temperature}")
        check(top_k is None or top_k >= 1, f"top_k must be >= 1, got {top_k}")
        return self._sample(idx, max_new_tokens, temperature, top_k, generator)

    def _next_logits(
        self, idx: torch.Tensor, new: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any]:
        """The (B, V) logits of the token after ``idx``, and the state for the next call;
        ``new`` holds the tokens of ``idx`` not read yet (the whole prompt at first). A
        recurrent model reads them into its carried state; a Transformer overrides this."""
        logits, state = self(new, state)
        return logits[:, -1, :], state

    @torch.inference_mode()
    def _sample(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float,
        top_k: int | None,
        generator: torch.Generator | None,
    ) -> Iterator[torch.Tensor]:
        was_training = self.training
        self.eval()
        try:
            state, new, pick = None, idx, TokenSampler(temperature, top_k, generator)
            for _ in range(max_new_tokens):
                logits, state = self._next_logits(idx, new, state)
                token = pick(logits)
                yield token
                idx = torch.cat([idx, token[:, None]], dim=1)
                new = token[:, None]
        finally:
            self.train(was_training)

    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The (B, T) prompt followed by ``max_new_tokens`` sampled tokens: (B, T + new)."""
        new = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, generator))
        return torch.cat([idx, *(t[:, None] for t in new)], dim=1) if new else idx


class TokenSampler:
    """The next token from (B, V) logits: the likeliest with ``temperature`` 0, else a draw
    from softmax(logits / temperature), over the ``top_k`` likeliest tokens if given.

    Draws use the Gumbel-max trick (Gumbel 1954; see Maddison, Tarlow & Minka 2014, "A*
    Sampling", §2): with G independent standard Gumbel noise, argmax(logits / T + G) is
    distributed as softmax(logits / T). The noise, T · G, is drawn ``CHUNK`` steps at a time
    from ``generator``, so a step is an add and an argmax instead of a softmax and
    ``torch.multinomial``: sampling the classic GPT went 10-12% faster with it (2-core Xeon).
    A seed gives the same tokens, and a shorter sample is a prefix of a longer one."""

    CHUNK = 64

    def __init__(
        self, temperature: float, top_k: int | None, generator: torch.Generator | None
    ) -> None:
        self.temperature, self.top_k, self.generator = temperature, top_k, generator
        self.noise: torch.Tensor | None = None  # (CHUNK, B, V)
        self.used = 0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # (B, V)
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.noise is None or self.used == self.CHUNK:
            shape = (self.CHUNK, *logits.shape)
            u = torch.rand(shape, generator=self.generator, device=logits.device)
            self.noise, self.used = -torch.log(-torch.log(u)) * self.temperature, 0
        self.used += 1
        return (logits + self.noise[self.used - 1]).argmax(dim=-1)  # argmax(l/T + G)


def unwrap(model: nn.Module, cls: type[T]) -> T:
    """The ``cls`` model inside a torch.compile wrapper or an EMA (AveragedModel): where a
    kind of run needs methods beyond ``forward`` (a detector's ``decode``)."""
    while not isinstance(model, cls):
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        check(inner is not None, f"{type(model).__name__} is not a {cls.__name__}")
        model = inner
    return model


Model = ImageClassifier | LanguageModel
MODELS: Registry[tuple[type[Model], dict[str, Any]]] = Registry("model")
M = TypeVar("M", bound=type[Model])


def register_model(name: str, **defaults: Any) -> Callable[[M], M]:
    """Class decorator registering ``cls`` as ``name`` with config ``defaults``; stackable.

    One class can be registered under several names, e.g. ``ResNet`` as resnet20 (depth=20)
    and plain20 (depth=20, residual=False).
    """

    def add(cls: M) -> M:
        cls.Config(**defaults)  # wrong defaults fail at import, not at first use
        MODELS.add(name, (cls, dict(defaults)))
        return cls

    return add


def model_config_class(name: str) -> type[ImageModelConfig | TextModelConfig]:
    """The config dataclass of model ``name`` (UserError if no such model)."""
    return MODELS.get(name)[0].Config


def model_config(name: str, **overrides: Any) -> ImageModelConfig | TextModelConfig:
    """The validated config of model ``name``: its registered defaults updated by ``overrides``.

    Lists are accepted for tuple fields and ints for float fields; anything else of the wrong
    type, an unknown key or an invalid value is a one-line ``UserError``.
    """
    cls, defaults = MODELS.get(name)
    hints = typing.get_type_hints(cls.Config)
    types = {f.name: hints[f.name] for f in dataclasses.fields(cls.Config)}
    values = dict(defaults)
    for key, value in overrides.items():
        if key not in types:
            valid = ", ".join(sorted(types))
            raise UserError(f"model {name!r} has no option {key!r}; valid options: {valid}")
        try:
            values[key] = coerce(value, types[key])
        except TypeError:
            hint = types[key]
            expected = hint if typing.get_origin(hint) else hint.__name__  # tuple[int, ...] | int
            raise UserError(f"model {name!r}: {key} must be {expected}, got {value!r}") from None
    try:
        return cls.Config(**values)
    except UserError as err:
        raise UserError(f"model {name!r}: {err}") from None


def model_defaults(name: str) -> dict[str, Any]:
    """Every config field of model ``name`` with its default value (registered defaults applied)."""
    return dataclasses.asdict(model_config(name))


def create_model(name: str, **overrides: Any) -> Model:
    """Build model ``name`` with its registered defaults updated by ``overrides``."""
    cls, _ = MODELS.get(name)
    return cls(model_config(name, **overrides))


def model_kind(name: str) -> str:
    """ "image" for image classifiers, "text" for language models."""
    return MODELS.get(name)[0].kind


def list_models(pattern: str = "*", kind: str | None = None) -> list[str]:
    """Registered model names matching ``pattern`` (fnmatch wildcards), sorted; only those of
    ``kind`` ("image" or "text") when given."""
    return [n for n in MODELS.names(pattern) if kind is None or model_kind(n) == kind]
