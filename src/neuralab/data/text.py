"""Text as token ids: a character tokenizer, reading UTF-8 text, and contiguous splits.

Character-level language modelling (Karpathy's char-rnn, nanoGPT's shakespeare_char) reads a
text one character at a time: the vocabulary is the set of characters of the text, saved
with every run as JSON so that sampling from a trained model needs no data at all.

Splits are contiguous, not shuffled: shuffled windows of one text overlap, so a shuffled val
split would share most of its characters with training. The last 5% of the text is always
the test split (fixed, like digits' test split, so test figures stay comparable across runs);
the ``val_fraction`` before it is the val split; the rest, from the start, is training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from neuralab.data.spec import DATASETS
from neuralab.data.store import located
from neuralab.errors import UserError

if TYPE_CHECKING:
    from neuralab.config import DataConfig

TEST_FRACTION = 0.05
MIN_CHARS = 100  # shorter texts cannot fill a train, a val and a test split


class CharTokenizer:
    """Characters <-> token ids; ids follow the sorted order of the characters (as in nanoGPT)."""

    def __init__(self, chars: Sequence[str]) -> None:
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise UserError("a character vocabulary is a non-empty list of single characters")
        if len(set(chars)) != len(chars):
            raise UserError("a character vocabulary must not repeat characters")
        self.chars = list(chars)
        self._ids = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary of every distinct character of ``text``."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """(len(text),) int64 token ids; a character outside the vocabulary is a UserError."""
        unknown = sorted(set(text) - self._ids.keys())
        if unknown:
            shown = "".join(unknown[:20])
            raise UserError(
                f"{len(unknown)} character(s) not in this model's vocabulary: {shown!r}; "
                "use only characters of the text the model was trained on"
            )
        return torch.tensor([self._ids[c] for c in text], dtype=torch.int64)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """The text of token ids."""
        values = ids.tolist() if isinstance(ids, Tensor) else ids
        return "".join(self.chars[i] for i in values)

    def to_json(self) -> dict:
        return {"kind": "char", "chars": self.chars}

    def save(self, path: Path) -> None:
        """Write the vocabulary as JSON, atomically (temp file + rename)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> CharTokenizer:
        """The vocabulary saved by ``save``; a missing or malformed file is a UserError."""
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path} is missing; is this a text run directory?") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path} is not a vocabulary file: {err}") from None
        if not isinstance(obj, dict) or obj.get("kind") != "char" or "chars" not in obj:
            raise UserError(f'{path} is not a vocabulary file (expected {{"kind": "char", ...}})')
        return cls(obj["chars"])


def read_text_file(path: str | Path) -> str:
    """The contents of a UTF-8 text file; a missing, binary or too short file is a UserError."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"text file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory; data.path needs a UTF-8 text file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path} is not UTF-8 text (byte {err.start} is {raw[err.start]:#04x}); "
            "data.path needs a UTF-8 text file"
        ) from None
    if len(text) < MIN_CHARS:
        raise UserError(f"{path} has {len(text)} characters; a text needs at least {MIN_CHARS}")
    return text


def split_bounds(n: int, val_fraction: float) -> dict[str, tuple[int, int]]:
    """[start, end) of train, val and test in a text of ``n`` tokens: train first, test last."""
    if not 0 <= val_fraction < 1 - TEST_FRACTION:
        raise UserError(f"val_fraction must be in [0, {1 - TEST_FRACTION}), got {val_fraction}")
    n_test = max(round(TEST_FRACTION * n), 2)
    n_val = max(round(val_fraction * n), 2) if val_fraction > 0 else 0
    n_train = n - n_val - n_test
    if n_train < 2:
        raise UserError(f"a text of {n} tokens is too short to split into train, val and test")
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n - n_test, n)}


def eval_windows(tokens: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Inputs and targets of non-overlapping windows of ``length`` tokens covering ``tokens``:
    (N, length) each; every token but the first is a target exactly once, except a final
    remainder shorter than a window, which is dropped."""
    n = (len(tokens) - 1) // length
    if n == 0:
        raise UserError(f"a split of {len(tokens)} tokens holds no window of {length}")
    x = tokens[: n * length].view(n, length)
    y = tokens[1 : n * length + 1].view(n, length)
    return x, y


EVAL_STREAMS = 16  # a recurrent model is validated and tested on this many long streams


def eval_streams(tokens: Tensor, streams: int = EVAL_STREAMS) -> tuple[Tensor, Tensor]:
    """Inputs and targets of ``streams`` contiguous streams covering ``tokens``: (S, L) each.

    A recurrent model reads each stream from start to end with its state carried, so every
    prediction but the first few of each stream has a long context, as in char-rnn's eval.
    """
    s = max(1, min(streams, (len(tokens) - 1) // 2))
    length = (len(tokens) - 1) // s
    x = tokens[: s * length].view(s, length)
    y = tokens[1 : s * length + 1].view(s, length)
    return x, y


def is_text(cfg: DataConfig) -> bool:
    """Whether a run's data is text: a ``data.path`` file or a text dataset."""
    return bool(cfg.path) or DATASETS.get(cfg.name).kind == "text"


def read_tinyshakespeare(directory: Path) -> str:
    """tiny shakespeare's one file, as text."""
    return read_text_file(directory / "input.txt")


def load_text(cfg: DataConfig) -> tuple[str, str]:
    """(text, where it came from) of a run's data: ``data.path``, else the text dataset
    ``data.name`` found in the usual places (downloaded first when ``data.download``)."""
    if cfg.path:
        return read_text_file(cfg.path), str(Path(cfg.path).expanduser())
    spec = DATASETS.get(cfg.name)
    if spec.kind != "text":
        raise UserError(f"dataset {cfg.name!r} is not text; text datasets: {text_datasets()}")
    _, directory = located(cfg.name, cfg.data_dir or None, cfg.download)
    return spec.read(directory), str(directory)


def text_datasets() -> str:
    return ", ".join(n for n in DATASETS.names() if DATASETS.get(n).kind == "text")


def load_token_splits(
    cfg: DataConfig, tokenizer: CharTokenizer | None = None
) -> tuple[CharTokenizer, dict[str, Tensor]]:
    """The tokenizer (built from the whole text unless given) and the token ids of the
    train, val and test splits of a run's text."""
    text, _ = load_text(cfg)
    tokenizer = tokenizer or CharTokenizer.from_text(text)
    tokens = tokenizer.encode(text)
    bounds = split_bounds(len(tokens), cfg.val_fraction)
    return tokenizer, {name: tokens[a:b] for name, (a, b) in bounds.items()}
