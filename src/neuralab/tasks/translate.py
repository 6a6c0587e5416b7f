"""Machine translation (``bible-en-es``, ``bible-kjv-web``): sequence to sequence.

The source and target verses share one byte-level BPE tokenizer learnt from the train
split's two sides (saved in the run directory as ``tokenizer.json``), so any text encodes
(bytes, never an unknown token). A source is cut to ``data.max_tokens`` tokens and a target
to one fewer, then ``<eos>`` (the cuts are counted in ``train/...cut``). Training is
teacher forcing: the decoder reads ``<bos>`` and the target but its last token, and the
loss is the label-smoothed cross-entropy (``train.label_smoothing``) of the target's
tokens, pads ignored. Batches are drawn from (seed, epoch) like every other run's, then
sorted by length within windows of ``BUCKET`` batches (whose order is shuffled again), so
that a batch carries little padding; each batch is cut to its longest source and target.

Validation decodes the val verses greedily and scores them with sacreBLEU's corpus BLEU and
chrF (Post 2018; the signature is kept); ``val/loss`` is the teacher-forced cross-entropy
without smoothing. The test step decodes the test books greedily and by beam search
(``TEST_BEAM``): ``test/bleu`` and ``test/chrf`` are the beam's, beside the greedy scores
and an honest floor, the source copied as its own translation (``test/copy_bleu``: high
between two English versions), and keeps examples in ``test_translations.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sacrebleu
import torch
from torch import Tensor, nn

from neuralab.attack.base import eval_mode
from neuralab.data import bible
from neuralab.data.batches import Batch, ImageBatches, bucket_order
from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.models.base import unwrap
from neuralab.models.search import beam_search, greedy, teacher_inputs
from neuralab.models.seq2seq import Seq2Seq, label_smoothed_loss
from neuralab.runs import write_atomic
from neuralab.seed import derived_generator, seed_everything
from neuralab.tasks.base import TASKS, Setup, Task, dataset_of_kind
from neuralab.tasks.textclass import encode_texts, pad_ids
from neuralab.text.bpe import BPETokenizer

if TYPE_CHECKING:
    from neuralab.config import DataConfig, RunConfig

SPECIAL = ("<pad>", "<bos>", "<eos>")
TOKENIZER = "tokenizer.json"
TEST_BEAM = 4
BUCKET = 50  # batches sorted by length together
EXAMPLES = 30  # test translations kept in test_translations.json
LENGTH = (2, 10)  # a translation has at most 2 S + 10 tokens (and max_len) for S source tokens


def books_of(cfg: DataConfig) -> tuple[str, ...]:
    return tuple(b.strip() for b in cfg.books.split(",") if b.strip())


def split_pairs(cfg: DataConfig, split: str) -> list[tuple[str, str, str]]:
    """(ref, source, target) of ``split`` of the parallel set ``cfg.name``."""
    return bible.translation_split(cfg.name, split, cfg.data_dir or None, books_of(cfg))


def encode_targets(
    tokenizer: BPETokenizer, texts: list[str], max_tokens: int
) -> tuple[Tensor, int]:
    """(ids (N, T) ending with ``<eos>`` and padded, T <= ``max_tokens``; how many were cut)."""
    eos = tokenizer.special["<eos>"]
    encoded = [tokenizer.encode_ordinary(t) for t in texts]
    rows = [e[: max_tokens - 1] + [eos] for e in encoded]
    return pad_ids(rows, tokenizer.special["<pad>"]), sum(len(e) > max_tokens - 1 for e in encoded)


def trim(ids: Tensor, pad: int) -> Tensor:
    """(B, L) ids cut to the longest row's real tokens."""
    return ids[:, : int((ids != pad).sum(1).max().clamp(min=1))]


class BucketBatches(ImageBatches):
    """Sources and targets of a permutation drawn from (seed, epoch), sorted by target length
    within windows of ``BUCKET`` batches (``bucket_order``)."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int, pad: int) -> None:
        super().__init__(x, y, batch_size, seed)
        self.pad = pad

    def get(self, step: int) -> Batch:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            lengths = (self.y != self.pad).sum(1)
            gen = derived_generator(self.seed, epoch)
            self._perm = bucket_order(lengths, self.batch_size, BUCKET, gen)
            self._epoch = epoch
        idx = self._perm[i * self.batch_size : (i + 1) * self.batch_size]
        return Batch(trim(self.x[idx], self.pad), trim(self.y[idx], self.pad))


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, Any]:
    """sacreBLEU's corpus BLEU and chrF (0-100) and their signatures."""
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    return {
        "bleu": bleu.corpus_score(hypotheses, [references]).score,
        "chrf": chrf.corpus_score(hypotheses, [references]).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


@torch.no_grad()
def translate_ids(
    model: nn.Module, src: Tensor, batch_size: int, beam: int = 1
) -> list[tuple[list[int], Tensor]]:
    """Each source's target ids (and attention weights) by greedy decoding (``beam`` 1) or
    beam search, in eval mode, at most ``LENGTH`` tokens long; batches of similar length go
    together."""
    translator = unwrap(model, Seq2Seq)
    pad = translator.config.pad_id
    order = (src != pad).sum(1).argsort().tolist()
    out: list[Any] = [None] * len(src)
    with eval_mode(translator):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            xb = trim(src[idx], pad)
            max_len = min(translator.config.max_len, LENGTH[0] * xb.shape[1] + LENGTH[1])
            found = (
                greedy(translator, xb, max_len)
                if beam == 1
                else beam_search(translator, xb, max_len, beam)
            )
            for i, result in zip(idx, found, strict=True):
                out[i] = result
    return out


def translate_texts(
    model: nn.Module, tokenizer: BPETokenizer, texts: list[str], beam: int = TEST_BEAM
) -> list[dict[str, Any]]:
    """Each text's translation by beam search (``beam`` 1: greedy), in eval mode: a dict of
    ``translation``, the ``source`` and ``target`` tokens (as text), the (target, source)
    attention ``weights`` ((target, 0) for a model that does not attend) and whether the
    text was ``cut`` at the model's ``max_len`` tokens. An empty text is a one-line error;
    every other text encodes (byte-level BPE has no unknown token)."""
    if any(not t.strip() for t in texts):
        raise UserError("a text to translate is empty: there is nothing to translate")
    if beam < 1:
        raise UserError(f"the beam must be >= 1, got {beam}")
    translator = unwrap(model, Seq2Seq)
    max_len = translator.config.max_len
    encoded = [tokenizer.encode_ordinary(t) for t in texts]
    x = pad_ids([e[:max_len] for e in encoded], tokenizer.special["<pad>"])
    piece = lambda i: tokenizer.decode_bytes([i]).decode("utf-8", errors="replace")  # noqa: E731
    out = []
    for text, whole, (ids, weights) in zip(
        texts, encoded, translate_ids(model, x, len(texts), beam), strict=True
    ):
        source = whole[:max_len]
        out.append(
            {
                "text": text,
                "translation": tokenizer.decode(ids),
                "source": [piece(i) for i in source],
                "target": [piece(i) for i in ids],
                "weights": weights[:, : len(source)],
                "cut": len(whole) > max_len,
            }
        )
    return out


@TASKS.register("translate")
class TranslateTask(Task):
    """Translation of ``bible-en-es`` or ``bible-kjv-web``: ``model(src, words)`` gives the
    teacher-forced logits."""

    model_kind = "seq2seq"
    monitors = ("val/bleu", "val/chrf", "val/loss")

    def __init__(self, smoothing: float = 0.0) -> None:
        self.smoothing = smoothing
        self.tokenizer: BPETokenizer | None = None
        self.pad_id, self.bos_id = 0, 1
        self.val_references: list[str] = []

    @classmethod
    def from_config(cls, cfg: RunConfig) -> TranslateTask:
        needs = f"translation needs parallel texts (data.name: {' or '.join(bible.PAIRS)})"
        dataset_of_kind(cfg, "parallel-text", needs)
        return cls(cfg.train.label_smoothing)

    def check_data(self, cfg: RunConfig) -> None:
        bible.check_books(books_of(cfg.data))
        for translation in bible.PAIRS[cfg.data.name]:
            bible.find_module(translation, cfg.data.data_dir or None)

    def higher_is_better(self, monitor: str) -> bool:
        return monitor in ("val/bleu", "val/chrf")

    def load_tokenizer(
        self, cfg: RunConfig, run_dir: Path, texts: list[str] | None
    ) -> BPETokenizer:
        """The run's tokenizer: read from the run directory, else learnt from ``texts`` and
        saved there."""
        path = run_dir / TOKENIZER
        if path.is_file():
            tokenizer = BPETokenizer.load(path)
        elif texts is None:
            raise UserError(f"{run_dir} has no {TOKENIZER}: it is not a translation run")
        else:
            tokenizer = BPETokenizer.train(texts, cfg.data.vocab_size, special=SPECIAL)
            tokenizer.save(path)
        self.tokenizer = tokenizer
        self.pad_id, self.bos_id = tokenizer.special["<pad>"], tokenizer.special["<bos>"]
        return tokenizer

    def prepare(self, cfg: RunConfig, run_dir: Path, resume: bool) -> Setup:
        """The train and val verse pairs as token ids, the shared tokenizer learnt from both
        sides of the train pairs, and the model."""
        train = split_pairs(cfg.data, "train")
        val = split_pairs(cfg.data, "val")
        sources, targets = [p[1] for p in train], [p[2] for p in train]
        tokenizer = self.load_tokenizer(cfg, run_dir, sources + targets)
        length = cfg.data.max_tokens
        x_train, src_cut = encode_texts(tokenizer, sources, length)
        y_train, tgt_cut = encode_targets(tokenizer, targets, length)
        x_val, _ = encode_texts(tokenizer, [p[1] for p in val], length)
        y_val, _ = encode_targets(tokenizer, [p[2] for p in val], length)
        self.val_references = [p[2] for p in val]
        seed_everything(cfg.seed)
        model = create_model(
            cfg.model.name,
            vocab_size=tokenizer.vocab_size,
            pad_id=self.pad_id,
            bos_id=self.bos_id,
            eos_id=tokenizer.special["<eos>"],
            max_len=length,
            **cfg.model.options,
        )
        batches = BucketBatches(x_train, y_train, cfg.train.batch_size, cfg.seed, self.pad_id)
        sizes = {
            "train/examples": len(x_train),
            "val/examples": len(x_val),
            "train/sources_cut": src_cut,
            "train/targets_cut": tgt_cut,
            "train/target_tokens": int((y_train != self.pad_id).sum()),
        }
        return Setup(model, batches, (x_val, y_val), sizes)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Label-smoothed cross-entropy of the target tokens (``train/acc``: tokens right)."""
        logits = model(x, teacher_inputs(y, self.bos_id))
        loss, stats = label_smoothed_loss(logits, y, self.pad_id, self.smoothing)
        return loss, {"count": stats["count"], "correct": stats["correct"]}

    @torch.no_grad()
    def teacher_loss(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
        """Mean cross-entropy per target token (no smoothing), in eval mode."""
        total, count = 0.0, 0
        with eval_mode(unwrap(model, Seq2Seq)):
            for start in range(0, len(x), batch_size):
                xb, yb = (
                    trim(x[start : start + batch_size], self.pad_id),
                    trim(y[start : start + batch_size], self.pad_id),
                )
                _, stats = label_smoothed_loss(
                    model(xb, teacher_inputs(yb, self.bos_id)), yb, self.pad_id
                )
                total += float(stats["ce"])
                count += int(stats["count"])
        return total / max(count, 1)

    def translations(
        self, model: nn.Module, x: Tensor, batch_size: int, beam: int = 1
    ) -> list[str]:
        assert self.tokenizer is not None
        return [self.tokenizer.decode(ids) for ids, _ in translate_ids(model, x, batch_size, beam)]

    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        scores = corpus_scores(self.translations(model, x, batch_size), self.val_references)
        return {
            "val/loss": self.teacher_loss(model, x, y, batch_size),
            "val/bleu": scores["bleu"],
            "val/chrf": scores["chrf"],
        }

    def summary(self, setup: Setup, steps: int, train_s: float) -> dict[str, Any]:
        """Target tokens per second of training steps (padding not counted)."""
        per_pair = setup.sizes["train/target_tokens"] / max(setup.sizes["train/examples"], 1)
        tokens = per_pair * setup.batches.batch_size * steps
        return {"train/target_tokens_per_s": round(tokens / max(train_s, 1e-9), 1)}

    def test(
        self, cfg: RunConfig, run_dir: Path, model: nn.Module, data_cfg: DataConfig
    ) -> dict[str, Any]:
        """Greedy and beam-search translations of the test books, scored by sacreBLEU."""
        tokenizer = self.load_tokenizer(cfg, run_dir, None)
        pairs = split_pairs(data_cfg, "test")
        sources, references = [p[1] for p in pairs], [p[2] for p in pairs]
        x, _ = encode_texts(tokenizer, sources, cfg.data.max_tokens)
        batch_size = cfg.train.eval_batch_size
        greedy_out = self.translations(model, x, batch_size)
        beamed = self.translations(model, x, max(batch_size // TEST_BEAM, 1), TEST_BEAM)
        g, b = corpus_scores(greedy_out, references), corpus_scores(beamed, references)
        copy = corpus_scores(sources, references)
        examples = [
            {"ref": p[0], "source": p[1], "reference": p[2], "greedy": gt, f"beam{TEST_BEAM}": bt}
            for p, gt, bt in zip(pairs[:EXAMPLES], greedy_out, beamed, strict=False)
        ]
        write_atomic(
            run_dir / "test_translations.json", json.dumps(examples, indent=1, ensure_ascii=False)
        )
        return {
            "test/bleu": b["bleu"],
            "test/chrf": b["chrf"],
            "test/greedy_bleu": g["bleu"],
            "test/greedy_chrf": g["chrf"],
            "test/copy_bleu": copy["bleu"],
            "test/copy_chrf": copy["chrf"],
            "test/beam": TEST_BEAM,
            "test/examples": len(pairs),
            "test/books": [
                book for book in bible.TEST_BOOKS if any(p[0].split()[0] == book for p in pairs)
            ],
            "test/bleu_signature": b["bleu_signature"],
            "test/chrf_signature": b["chrf_signature"],
        }

    def describe(self, run_dir: Path, summary: dict, test: dict) -> list[list[str]]:
        return [
            *super().describe(run_dir, summary, test),
            ["best val BLEU", self.best_val(summary, "val/bleu")],
            [
                f"test BLEU / chrF (beam {test['test/beam']})",
                f"{test['test/bleu']:.2f} / {test['test/chrf']:.2f} on "
                f"{test['test/examples']} verses ({', '.join(test['test/books'])})",
            ],
            ["greedy", f"BLEU {test['test/greedy_bleu']:.2f}, chrF {test['test/greedy_chrf']:.2f}"],
            [
                "source copied",
                f"BLEU {test['test/copy_bleu']:.2f}, chrF {test['test/copy_chrf']:.2f}",
            ],
            ["sacreBLEU", test["test/bleu_signature"]],
            ["examples", str(run_dir / "test_translations.json")],
        ]
