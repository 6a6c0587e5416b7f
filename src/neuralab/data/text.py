"""Text as token ids: a character tokenizer, reading UTF-8 text, and contiguous splits.

Character-level language modelling (Karpathy's char-rnn, nanoGPT's shakespeare_char) reads a
text one character at a time: the vocabulary is the set of characters of the text, saved
with every run as JSON (``vocab.json``) so that sampling from a trained model needs no data
at all. With ``data.tokenizer = "bpe"`` a run reads byte-level BPE tokens instead
(``neuralab.text.bpe``), learnt from the train split only (``data.vocab_size`` tokens) and
saved as ``tokenizer.json``.

Splits are contiguous, not shuffled: shuffled windows of one text overlap, so a shuffled val
split would share most of its characters with training. The last 5% of the text is always
the test split (fixed, like digits' test split, so test figures stay comparable across runs);
the ``val_fraction`` before it is the val split; the rest, from the start, is training.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from neuralab.data import bible, fortunes
from neuralab.data.spec import DATASETS
from neuralab.data.store import located
from neuralab.errors import UserError
from neuralab.text.bpe import BPETokenizer

if TYPE_CHECKING:
    from neuralab.config import DataConfig

TEST_FRACTION = 0.05
# the labelled-text datasets: (texts, labels) of a split; a language model reads their texts
LABELLED_TEXTS = {"bible-genre": bible.genre_split, "fortunes": fortunes.fortune_split}
CLASSIFIER_SPECIAL = ("<pad>", "<cls>")  # a text classifier's tokens beyond BPE's
MIN_CHARS = 100  # shorter texts cannot fill a train, a val and a test split


def labelled_split(cfg: DataConfig, split: str) -> tuple[list[str], list[int]]:
    """(texts, labels) of ``split`` of the labelled-text dataset ``cfg.name``; bible-genre's
    train split holds the verses of each of ``data.translations``."""
    read = LABELLED_TEXTS[cfg.name]
    if cfg.name == "bible-genre":
        return read(split, cfg.data_dir or None, translations=cfg.translations)
    if cfg.translations != ("web",):
        raise UserError(f"data.translations is bible-genre's option, not {cfg.name}'s")
    return read(split, cfg.data_dir or None)


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

    def decode_stream(self, tokens: Iterable[Tensor]) -> Iterator[str]:
        """The text of each (1,) token as it comes."""
        return (self.decode(token) for token in tokens)

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


class BPETextTokenizer:
    """A byte-level BPE tokenizer with the character tokenizer's interface (ids as tensors),
    for language models that read ``data.tokenizer = "bpe"``."""

    FILE = "tokenizer.json"

    def __init__(self, bpe: BPETokenizer) -> None:
        self.bpe = bpe

    @classmethod
    def train(cls, text: str, vocab_size: int, special: Sequence[str] = ()) -> BPETextTokenizer:
        return cls(BPETokenizer.train(text, vocab_size, special=special))

    @property
    def vocab_size(self) -> int:
        return self.bpe.vocab_size

    def encode(self, text: str) -> Tensor:
        return torch.tensor(self.bpe.encode_ordinary(text), dtype=torch.int64)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        return self.bpe.decode(ids.tolist() if isinstance(ids, Tensor) else ids)

    def decode_stream(self, tokens: Iterable[Tensor]) -> Iterator[str]:
        """The text of the tokens as they come: a character whose UTF-8 bytes span several
        tokens appears once its last byte has."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for token in tokens:
            text = decoder.decode(self.bpe.decode_bytes(token.tolist()))
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def save(self, path: Path) -> None:
        self.bpe.save(path)

    @classmethod
    def load(cls, path: Path) -> BPETextTokenizer:
        return cls(BPETokenizer.load(path))


Tokenizer = CharTokenizer | BPETextTokenizer


def load_run_tokenizer(run_dir: Path) -> Tokenizer:
    """The tokenizer a language-model run saved: ``tokenizer.json`` (BPE), else
    ``vocab.json`` (characters)."""
    bpe = Path(run_dir) / BPETextTokenizer.FILE
    return (
        BPETextTokenizer.load(bpe)
        if bpe.is_file()
        else CharTokenizer.load(Path(run_dir) / "vocab.json")
    )


def char_tokenizer_of(run_dir: Path) -> CharTokenizer:
    """The character vocabulary of a language-model run, for the probes that label
    characters; a BPE run is a one-line error."""
    tokenizer = load_run_tokenizer(run_dir)
    if not isinstance(tokenizer, CharTokenizer):
        raise UserError(
            f"{run_dir} reads BPE tokens; this probe labels characters and needs a "
            "character-level run (data.tokenizer=char)"
        )
    return tokenizer


def tokenizer_file(tokenizer: Tokenizer) -> str:
    """The name a run directory keeps ``tokenizer`` under."""
    return BPETextTokenizer.FILE if isinstance(tokenizer, BPETextTokenizer) else "vocab.json"


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
    cfg: DataConfig, tokenizer: Tokenizer | None = None
) -> tuple[Tokenizer, dict[str, Tensor]]:
    """The tokenizer (unless given: ``data.tokenizer``'s, the characters of the whole text or
    BPE learnt from the train split) and the token ids of the train, val and test splits of
    a run's text, split by characters.

    A labelled-text dataset (``bible-genre``, ``fortunes``) is read as its own splits' texts,
    one per line, labels unused: the unlabelled text that a classifier of the same splits can
    be pretrained on (GPT-1's recipe). Its BPE tokenizer then has the classifier's ``<pad>``
    and ``<cls>``, so that a text classifier can start from the language model
    (``train.init_from``)."""
    special: tuple[str, ...] = ()
    if cfg.name in LABELLED_TEXTS and not cfg.path:
        parts = {s: "\n".join(labelled_split(cfg, s)[0]) for s in ("train", "val", "test")}
        text, special = "\n".join(parts.values()), CLASSIFIER_SPECIAL
    else:
        text, _ = load_text(cfg)
        bounds = split_bounds(len(text), cfg.val_fraction)
        parts = {name: text[a:b] for name, (a, b) in bounds.items()}
    if tokenizer is None:
        if cfg.tokenizer == "bpe":
            tokenizer = BPETextTokenizer.train(parts["train"], cfg.vocab_size, special)
        else:
            tokenizer = CharTokenizer.from_text(text)
    return tokenizer, {name: tokenizer.encode(part) for name, part in parts.items()}
