"""Image captioning: a sentence for a scene, scored against its five references and against
the facts of the picture.

Training is teacher forcing: each step, every scene of the batch comes with one of its five
references, drawn from (seed, step), and the loss is the mean cross-entropy of its words
(plus, for ``caption_attention``, the doubly stochastic attention regulariser). Validation
decodes the val scenes greedily and measures BLEU-4 and the grounded fact F1 (``data.
caption_grammar``: the caption parsed back into counts, colours, sizes and relations, and
checked against the scene). The test step does the same on the i.i.d. test split
(``test/...``: BLEU-1..4, CIDEr-D, fact precision, recall and F1, for greedy decoding and
beam search) and on the compositional one (``test_comp/...``), and keeps example captions
in ``test_captions.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from neuralab import data
from neuralab.attack.base import eval_mode
from neuralab.data import captions
from neuralab.data.batches import Batch, ImageBatches
from neuralab.data.caption_grammar import fact_scores
from neuralab.models import create_model
from neuralab.models.base import unwrap
from neuralab.models.captioner import BOS, Captioner
from neuralab.models.search import decode, teacher_inputs
from neuralab.runs import write_atomic
from neuralab.seed import derived_generator, seed_everything
from neuralab.tasks.base import TASKS, Setup, Task, dataset_of_kind
from neuralab.tasks.caption_metrics import bleu, cider_d

if TYPE_CHECKING:
    from neuralab.config import DataConfig, RunConfig

TEST_BEAM = 3  # the beam the test step compares with greedy decoding
EXAMPLES = 20  # test captions kept in test_captions.json


class CaptionBatches(ImageBatches):
    """Scenes (uint8, made float per batch) with one of their references each, drawn from
    (seed, step): (B, 3, S, S) and (B, T) word ids, followed, if ``cells`` (N, P, 3) are
    given, by the flattened object targets of the scene's cells: (B, T + 3P)."""

    def __init__(self, *args, cells: Tensor | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cells = cells

    def get(self, step: int) -> Batch:
        idx = self.indices(step)
        references = self.y[idx]  # (B, references, T)
        gen = derived_generator(self.seed, step, 1)
        pick = torch.randint(references.shape[1], (len(idx),), generator=gen)
        y = references[torch.arange(len(idx)), pick]
        if self.cells is not None:
            y = torch.cat([y, self.cells[idx].flatten(1)], 1)
        return Batch(self.x[idx].float().div_(255), y)


@torch.no_grad()
def caption_all(model: nn.Module, x: Tensor, batch_size: int, beam: int = 1) -> list[list[int]]:
    """Each uint8 image's word ids, by greedy decoding (``beam`` 1) or beam search, in eval
    mode."""
    captioner = unwrap(model, Captioner)
    out = []
    with eval_mode(captioner):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].float().div(255)
            out += [ids for ids, _ in decode(captioner, xb, captioner.config.max_len, beam)]
    return out


@TASKS.register("caption")
class CaptionTask(Task):
    """Captions of ``fashion-scenes-captions``; ``model(x, words)`` gives the teacher-forced
    logits and attention weights, which the model's ``loss`` reads."""

    model_kind = "caption"
    monitors = ("val/fact_f1", "val/bleu4", "val/loss")

    def __init__(self) -> None:
        self.vocab: captions.Vocabulary | None = None
        self.val_split: captions.CaptionSplit | None = None

    @classmethod
    def from_config(cls, cfg: RunConfig) -> CaptionTask:
        dataset_of_kind(
            cfg, "captions", f"captioning needs a captioned scene set (data.name: {captions.NAME})"
        )
        return cls()

    def check_data(self, cfg: RunConfig) -> None:
        """The scenes are generated on first use; Fashion-MNIST must be here."""
        data.locate("fashion-mnist", cfg.data.data_dir or None)

    def higher_is_better(self, monitor: str) -> bool:
        return monitor in ("val/fact_f1", "val/bleu4")

    def prepare(self, cfg: RunConfig, run_dir: Path, resume: bool) -> Setup:
        """The train and val scenes, the vocabulary of the training captions (saved in the
        run directory as ``vocab.json`` and read back on resume), and the captioner."""
        train = captions.load_split(cfg.data, "train")
        self.val_split = captions.load_split(cfg.data, "val")
        vocab_path = run_dir / "vocab.json"
        if resume:
            self.vocab = captions.Vocabulary.load(vocab_path)
        else:
            self.vocab = captions.Vocabulary.build(train.references)
            self.vocab.save(vocab_path)
        mean, std = (tuple(v / 255 for v in stat) for stat in data.channel_stats(train.images))
        seed_everything(cfg.seed)
        model = create_model(
            cfg.model.name,
            vocab_size=len(self.vocab),
            image_size=cfg.data.scene_size,
            mean=mean,
            std=std,
            **{"object_targets": captions.OBJECT_TARGETS, **cfg.model.options},
        )
        length = model.config.max_len
        y_train = captions.encode_references(self.vocab, train.references, length)
        y_val = captions.encode_references(self.vocab, self.val_split.references, length)
        cells = None
        if model.config.objects:
            side = cfg.data.scene_size // model.config.stride
            cells = captions.object_cells(train.things, cfg.data.scene_size, side)
        batches = CaptionBatches(train.images, y_train, cfg.train.batch_size, cfg.seed, cells=cells)
        sizes = {"train/examples": len(train.images), "val/examples": len(y_val)}
        return Setup(model, batches, (self.val_split.images, y_val), sizes)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher-forced cross-entropy of the words (``train/acc``: words right), and the
        objects loss if the batch carries the cells' targets after the words."""
        captioner = unwrap(model, Captioner)
        words, rest = y[:, : captioner.config.max_len], y[:, captioner.config.max_len :]
        targets = len(captioner.config.object_targets)
        cells = rest.view(len(y), -1, targets) if rest.shape[1] else None
        return captioner.loss(model(x, teacher_inputs(words, BOS)), words, cells)

    def evaluate(
        self, model: nn.Module, split: captions.CaptionSplit, batch_size: int, beam: int = 1
    ) -> dict[str, Any]:
        """BLEU-1..4, CIDEr-D and the fact scores of the captions ``model`` writes for
        ``split``'s scenes, and the captions."""
        assert self.vocab is not None
        ids = caption_all(model, split.images, batch_size, beam)
        written = [self.vocab.decode(i) for i in ids]
        return {
            **bleu(written, split.references),
            "cider": cider_d(written, split.references),
            **fact_scores(written, split.things),
            "captions": written,
        }

    @torch.no_grad()
    def _teacher_loss(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
        """Mean word cross-entropy on each scene's first reference, in eval mode."""
        captioner = unwrap(model, Captioner)
        total, words = 0.0, 0
        with eval_mode(captioner):
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size].float().div(255)
                yb = y[start : start + batch_size, 0]
                _, stats = captioner.loss(model(xb, teacher_inputs(yb, BOS)), yb)
                total += float(stats["ce"]) * int(stats["count"])
                words += int(stats["count"])
        return total / max(words, 1)

    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        assert self.val_split is not None
        result = self.evaluate(model, self.val_split, batch_size)
        return {
            "val/loss": self._teacher_loss(model, x, y, batch_size),
            "val/bleu4": result["bleu4"],
            "val/fact_f1": result["fact_f1"],
        }

    def test(
        self, cfg: RunConfig, run_dir: Path, model: nn.Module, data_cfg: DataConfig
    ) -> dict[str, Any]:
        """Greedy and beam-search captions of the i.i.d. and compositional test scenes."""
        self.vocab = captions.Vocabulary.load(run_dir / "vocab.json")
        batch_size = cfg.train.eval_batch_size
        out: dict[str, Any] = {}
        examples = {}
        for split, prefix in (("test", "test"), ("test_comp", "test_comp")):
            scenes = captions.load_split(data_cfg, split)
            result = self.evaluate(model, scenes, batch_size)
            beamed = self.evaluate(model, scenes, batch_size, TEST_BEAM)
            for key in ("bleu1", "bleu2", "bleu3", "bleu4", "cider"):
                out[f"{prefix}/{key}"] = result[key]
                out[f"{prefix}/beam{TEST_BEAM}_{key}"] = beamed[key]
            for key in ("fact_precision", "fact_recall", "fact_f1"):
                out[f"{prefix}/{key}"] = result[key]
                out[f"{prefix}/beam{TEST_BEAM}_{key}"] = beamed[key]
            out[f"{prefix}/examples"] = len(scenes.images)
            examples[split] = [
                {"greedy": g, f"beam{TEST_BEAM}": b, "references": r}
                for g, b, r in zip(
                    result["captions"][:EXAMPLES],
                    beamed["captions"][:EXAMPLES],
                    scenes.references[:EXAMPLES],
                    strict=False,
                )
            ]
        out["test/bleu_signature"] = result["signature"]
        write_atomic(run_dir / "test_captions.json", json.dumps(examples, indent=1))
        return out

    def describe(self, run_dir: Path, summary: dict, test: dict) -> list[list[str]]:
        return [
            *super().describe(run_dir, summary, test),
            ["best val fact F1", self.best_val(summary, "val/fact_f1")],
            [
                "test BLEU-4 / CIDEr-D",
                f"{test['test/bleu4']:.3f} / {test['test/cider']:.3f} "
                f"on {test['test/examples']} scenes (greedy)",
            ],
            ["test fact F1", f"{test['test/fact_f1']:.3f} (i.i.d.)"],
            [
                "compositional",
                f"BLEU-4 {test['test_comp/bleu4']:.3f}, fact F1 {test['test_comp/fact_f1']:.3f}",
            ],
            ["examples", str(run_dir / "test_captions.json")],
        ]
