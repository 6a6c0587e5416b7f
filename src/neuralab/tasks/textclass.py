"""Classification of texts (``bible-genre``, ``fortunes``): a byte-level BPE tokenizer learnt
from the train texts (saved in the run directory), token ids padded to the longest text of
the set (at most ``data.max_tokens``, the rest cut), cross-entropy, and accuracy beside
macro-F1, the mean over classes of each class's F1, which a majority-class guess cannot
fake."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from neuralab import data
from neuralab.data.batches import ImageBatches
from neuralab.data.text import CLASSIFIER_SPECIAL as SPECIAL
from neuralab.data.text import LABELLED_TEXTS as READERS
from neuralab.data.text import labelled_split
from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.seed import seed_everything
from neuralab.tasks.base import TASKS, Setup, dataset_of_kind
from neuralab.tasks.classify import ClassifyTask
from neuralab.text.bpe import BPETokenizer

if TYPE_CHECKING:
    from neuralab.config import DataConfig, RunConfig

TOKENIZER = "tokenizer.json"


def macro_f1(confusion: Tensor) -> float:
    """The mean over classes of 2·precision·recall / (precision + recall), from a confusion
    matrix (rows: true, columns: predicted); a class never predicted nor present counts 0."""
    c = confusion.double()
    hits = c.diag()
    f1 = 2 * hits / (c.sum(0) + c.sum(1)).clamp(min=1)
    return f1.mean().item()


def pad_ids(rows: list[list[int]], pad: int) -> Tensor:
    """(N, L) int64 ids of the rows, each padded with ``pad`` to the longest (L >= 1)."""
    ids = torch.full((len(rows), max(max((len(r) for r in rows), default=1), 1)), pad)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
    return ids


def encode_texts(tokenizer: BPETokenizer, texts: list[str], max_tokens: int) -> tuple[Tensor, int]:
    """(ids (N, L) int64 padded with ``<pad>``, L the longest text's tokens up to
    ``max_tokens``; how many texts were cut)."""
    encoded = [tokenizer.encode_ordinary(t) for t in texts]
    ids = pad_ids([e[:max_tokens] for e in encoded], tokenizer.special["<pad>"])
    return ids, sum(len(e) > max_tokens for e in encoded)


def split_texts(cfg: DataConfig, split: str) -> tuple[list[str], Tensor]:
    """(texts, labels) of ``split`` of the labelled-text dataset ``cfg.name``."""
    texts, labels = labelled_split(cfg, split)
    return texts, torch.tensor(labels, dtype=torch.int64)


def pretrained_tokenizer(run_dir: Path) -> BPETokenizer:
    """The tokenizer of the run a classifier starts from (``train.init_from``): its weights
    read token ids of that tokenizer, so the classifier must read the same."""
    path = run_dir / TOKENIZER
    tokenizer = BPETokenizer.load(path) if path.is_file() else None
    if tokenizer is None or any(s not in tokenizer.special for s in SPECIAL):
        raise UserError(
            f"train.init_from={run_dir} has no BPE tokenizer with {' and '.join(SPECIAL)}: start "
            "from a language model of a labelled-text dataset (e.g. preset bible_genre_lm)"
        )
    return tokenizer


@TASKS.register("textclass")
class TextClassTask(ClassifyTask):
    """A text's class from its tokens: ``model(ids)`` gives (B, classes) logits."""

    model_kind = "textclass"
    monitors = ("val/macro_f1", "val/acc", "val/loss")

    def __init__(self, classes: tuple[str, ...], label_smoothing: float = 0.0) -> None:
        super().__init__(len(classes), label_smoothing)
        self.classes = classes
        self.pad_id = 0  # the tokenizer's, once prepare has read it

    @classmethod
    def from_config(cls, cfg: RunConfig) -> TextClassTask:
        needs = f"text classification needs labelled texts (data.name: {' or '.join(READERS)})"
        spec = dataset_of_kind(cfg, "labelled-text", needs)
        return cls(spec.classes, cfg.train.label_smoothing)

    def higher_is_better(self, monitor: str) -> bool:
        return monitor in ("val/macro_f1", "val/acc")

    def check_data(self, cfg: RunConfig) -> None:
        data.locate(cfg.data.name, cfg.data.data_dir or None)

    def tokenizer(self, cfg: RunConfig, run_dir: Path, texts: list[str] | None) -> BPETokenizer:
        """The run's tokenizer: read from the run directory, else learnt from ``texts``
        and saved there."""
        path = run_dir / TOKENIZER
        if path.is_file():
            return BPETokenizer.load(path)
        if texts is None:
            raise UserError(f"{run_dir} has no {TOKENIZER}: it is not a text classification run")
        if cfg.train.init_from:
            tokenizer = pretrained_tokenizer(Path(cfg.train.init_from))
        else:
            tokenizer = BPETokenizer.train(texts, cfg.data.vocab_size, special=SPECIAL)
        tokenizer.save(path)
        return tokenizer

    def prepare(self, cfg: RunConfig, run_dir: Path, resume: bool) -> Setup:
        """The train and val texts as token ids, the tokenizer learnt from the train texts,
        and the model."""
        texts, y_train = split_texts(cfg.data, "train")
        tokenizer = self.tokenizer(cfg, run_dir, texts)
        self.pad_id = tokenizer.special["<pad>"]
        x_train, cut = encode_texts(tokenizer, texts, cfg.data.max_tokens)
        val_texts, y_val = split_texts(cfg.data, "val")
        x_val, _ = encode_texts(tokenizer, val_texts, cfg.data.max_tokens)
        seed_everything(cfg.seed)
        model = create_model(
            cfg.model.name,
            vocab_size=tokenizer.vocab_size,
            num_classes=self.num_classes,
            pad_id=tokenizer.special["<pad>"],
            cls_id=tokenizer.special["<cls>"],
            max_tokens=cfg.data.max_tokens,
            **cfg.model.options,
        )
        self.weigh_classes(cfg, y_train)
        batches = ImageBatches(x_train, y_train, cfg.train.batch_size, cfg.seed)
        sizes = {
            "train/examples": len(x_train),
            "val/examples": len(x_val),
            "train/texts_cut": cut,
            "train/tokens_per_text": round(
                (x_train != tokenizer.special["<pad>"]).sum().item() / max(len(x_train), 1), 2
            ),
        }
        return Setup(model, batches, (x_val, y_val), sizes)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The classification loss of a batch cut to its longest text: the models give
        the same logits however much padding follows (tested), so this saves only time."""
        width = int((x != self.pad_id).sum(1).max().clamp(min=1))
        return super().loss(model, x[:, :width], y)

    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        result = self.evaluate(model, x, y, batch_size)
        return {
            "val/loss": result["loss"],
            "val/acc": result["acc"],
            "val/macro_f1": macro_f1(result["confusion"]),
        }

    def test(
        self, cfg: RunConfig, run_dir: Path, model: Any, data_cfg: DataConfig
    ) -> dict[str, Any]:
        """Accuracy and macro-F1 beside the majority class's accuracy, per-class accuracy and
        the confusion matrix (also a PNG)."""
        tokenizer = self.tokenizer(cfg, run_dir, None)
        texts, y = split_texts(data_cfg, "test")
        x, _ = encode_texts(tokenizer, texts, cfg.data.max_tokens)
        scores = self.test_scores(cfg, run_dir, model, (x, y), self.classes)
        confusion = torch.tensor(scores["test/confusion"])
        scores["test/macro_f1"] = macro_f1(confusion)
        scores["test/majority"] = confusion.sum(1).max().item() / max(len(y), 1)
        return scores

    def describe(self, run_dir: Path, summary: dict, test: dict) -> list[list[str]]:
        rows = super().describe(run_dir, summary, test)
        rows[-2] = ["test acc", f"{test['test/acc']:.4f} on {test['test/examples']} texts"]
        return [
            *rows,
            ["test macro-F1", f"{test['test/macro_f1']:.4f}"],
            ["majority class", f"{test['test/majority']:.4f}"],
        ]
