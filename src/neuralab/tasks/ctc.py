"""Speech recognition with CTC (``spoken-digits``, ``spoken-commands``; Graves et al. 2006).

An utterance's log-mel frames (``data.audio``) go through an acoustic model (``models/speech``)
that scores, at each output step, every label and the blank; the loss is ``F.ctc_loss``, the
negative log of the summed probability of every path that reads as the transcript, per
utterance. The labels are the set's words (``data.units = "words"``) or their characters and
the space (``"chars"``). Training batches hold utterances of similar length (windows of
``BUCKET`` batches sorted by frames), augmented (``data.augment``) from (seed, step): each
utterance's frequencies scaled by a factor log-uniform in [``data.vtlp_low``,
``data.vtlp_high``] (vocal tract length perturbation, as if by another speaker), then
SpecAugment's masks.
Before training, every train and val utterance is checked to give enough output steps for
its transcript (a one-line error otherwise, never an infinite loss).

Validation decodes greedily and scores WER and CER with ``jiwer`` (``val/wer``, ``val/cer``,
both lower-better). The test step reads the test set of voices never heard in training
(``test/...``) and new utterances of the training voices (``test_seen/...``), by prefix beam
search (``BEAM``) beside greedy decoding; it reports WER, CER and the share of utterances
transcribed exactly (``acc``), per voice too, the real-time factor of the whole pipeline
(features, model, search) and a floor: the accuracy of always answering the most frequent
training transcript (``test/chance_acc``).
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jiwer
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab.attack.base import eval_mode
from neuralab.data import speech
from neuralab.data.audio import log_mel, spec_augment, warp_frequency
from neuralab.data.batches import Batch, bucket_order
from neuralab.models import create_model, model_config
from neuralab.models.ctc import as_tensor, beam_decode, check_lengths, greedy_decode
from neuralab.runs import write_atomic
from neuralab.seed import derived_generator, seed_everything
from neuralab.tasks.base import TASKS, Setup, Task, dataset_of_kind

if TYPE_CHECKING:
    from neuralab.config import DataConfig, RunConfig

BEAM = 8
BUCKET = 20
EXAMPLES = 40  # test transcripts kept in test_transcripts.json


class Labels:
    """The symbols a CTC model writes (index 0 is the blank): words or characters."""

    def __init__(self, name: str, units: str) -> None:
        words = speech.vocabulary(name)
        self.units = units
        self.symbols = words if units == "words" else tuple(sorted(set(" ".join(words))))
        self.index = {s: i + 1 for i, s in enumerate(self.symbols)}

    def encode(self, text: str) -> list[int]:
        return [self.index[s] for s in (text.split() if self.units == "words" else text)]

    def decode(self, labels: list[int]) -> str:
        parts = [self.symbols[i - 1] for i in labels]
        return " ".join(parts) if self.units == "words" else "".join(parts).strip()


def featurize(utterances: speech.Utterances, mels: int) -> tuple[list[Tensor], Tensor]:
    """Each utterance's (frames, mels) log-mel features, and their frame counts."""
    feats = [
        log_mel(torch.from_numpy(utterances.waveform(i)), mels) for i in range(len(utterances))
    ]
    return feats, torch.tensor([len(f) for f in feats])


def pad_features(feats: list[Tensor]) -> Tensor:
    """(B, T, mels) of (T_b, mels) features, zero-padded."""
    return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)


def pack_targets(frames: Tensor, labellings: list[list[int]]) -> Tensor:
    """(B, 1 + L): column 0 each utterance's frame count, then its labels padded with 0 (the
    blank, never a label), so one tensor carries both through the training loop."""
    return torch.cat([frames[:, None].long(), as_tensor(labellings)], 1)


def unpack_targets(y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(frame counts (B,), labels (B, L), label counts (B,)) of ``pack_targets``' tensor."""
    labels = y[:, 1:]
    return y[:, 0], labels, (labels > 0).sum(1)


class SpeechBatches:
    """Utterances of a permutation drawn from (seed, epoch), bucketed by length
    (``bucket_order``), padded to the batch's longest; augmented from (seed, step) by vocal
    tract length perturbation and SpecAugment."""

    def __init__(
        self,
        feats: list[Tensor],
        y: Tensor,
        batch_size: int,
        seed: int,
        augment: bool,
        vtlp: tuple[float, float],
    ) -> None:
        self.feats, self.y, self.seed, self.augment, self.vtlp = feats, y, seed, augment, vtlp
        self.fill = torch.cat(feats).mean(0)  # masked bands and frames: the mean, per mel
        self.batch_size = min(batch_size, len(feats))
        self.steps_per_epoch = len(feats) // self.batch_size
        self._perm, self._epoch = None, -1

    def get(self, step: int) -> Batch:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            gen = derived_generator(self.seed, epoch)
            self._perm = bucket_order(self.y[:, 0], self.batch_size, BUCKET, gen)
            self._epoch = epoch
        idx = self._perm[i * self.batch_size : (i + 1) * self.batch_size].tolist()
        x, y = pad_features([self.feats[j] for j in idx]), self.y[idx]
        y = y[:, : 1 + max(int((y[:, 1:] > 0).sum(1).max()), 1)]
        if self.augment:
            x = warp_frequency(x, derived_generator(self.seed, step, 4), *self.vtlp)
            x = spec_augment(x, y[:, 0], derived_generator(self.seed, step, 3), self.fill)
        return Batch(x, y)


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """jiwer's WER and CER, and the share of exact transcripts."""
    exact = sum(r == h for r, h in zip(references, hypotheses, strict=True))
    return {
        "wer": jiwer.wer(references, hypotheses),
        "cer": jiwer.cer(references, hypotheses),
        "acc": exact / max(len(references), 1),
    }


@TASKS.register("ctc")
class CTCTask(Task):
    """Speech to text: ``model(feats, frames)`` gives (B, T', labels + 1) scores and T'."""

    model_kind = "speech"
    monitors = ("val/wer", "val/cer", "val/loss")

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.val_references: list[str] = []

    @classmethod
    def from_config(cls, cfg: RunConfig) -> CTCTask:
        needs = f"speech recognition needs a speech set (data.name: {' or '.join(speech.NAMES)})"
        dataset_of_kind(cfg, "speech", needs)
        return cls(Labels(cfg.data.name, cfg.data.units))

    def check_data(self, cfg: RunConfig) -> None:
        """The sets are synthesized on first use: the synthesizers must be here."""
        speech.synthesizer_versions()

    def higher_is_better(self, monitor: str) -> bool:
        return False

    def targets(self, utterances: speech.Utterances) -> list[list[int]]:
        return [self.labels.encode(str(t)) for t in utterances.texts]

    def prepare(self, cfg: RunConfig, run_dir: Path, resume: bool) -> Setup:
        """The train and val utterances as log-mel features, and the model, normalising by
        the train features' per-mel mean and std (after each utterance's own mean is
        subtracted, as the model does unless ``model.utterance_norm = false``)."""
        train = speech.load_speech_split(cfg.data, "train")
        val = speech.load_speech_split(cfg.data, "val")
        feats, frames = featurize(train, cfg.data.mels)
        val_feats, val_frames = featurize(val, cfg.data.mels)
        seed_everything(cfg.seed)
        normed = model_config(cfg.model.name, **cfg.model.options).utterance_norm
        every = torch.cat([f - f.mean(0) for f in feats] if normed else feats)
        model = create_model(
            cfg.model.name,
            mels=cfg.data.mels,
            vocab_size=len(self.labels.symbols) + 1,
            mean=tuple(every.mean(0).tolist()),
            std=tuple(every.std(0).clamp(min=1e-3).tolist()),
            **cfg.model.options,
        )
        hint = "use model.time_stride=2, or data.units=words"
        train_targets, val_targets = self.targets(train), self.targets(val)
        check_lengths(model.out_lengths(frames), train_targets, f"(train) {hint}")
        check_lengths(model.out_lengths(val_frames), val_targets, f"(val) {hint}")
        self.val_references = [str(t) for t in val.texts]
        y = pack_targets(frames, train_targets)
        batches = SpeechBatches(
            feats,
            y,
            cfg.train.batch_size,
            cfg.seed,
            cfg.data.augment,
            (cfg.data.vtlp_low, cfg.data.vtlp_high),
        )
        val_pair = (pad_features(val_feats), pack_targets(val_frames, val_targets))
        sizes = {
            "train/examples": len(train),
            "val/examples": len(val),
            "train/audio_s": round(train.seconds(), 1),
        }
        return Setup(model, batches, val_pair, sizes)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """CTC loss summed over each utterance's paths, averaged over utterances."""
        frames, labels, counts = unpack_targets(y)
        logits, steps = model(x, frames)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T', B, V)
        loss = F.ctc_loss(log_probs, labels, steps, counts, blank=0, reduction="sum")
        return loss / len(x), {"count": torch.tensor(len(x))}

    @torch.no_grad()
    def decode(
        self, model: nn.Module, x: Tensor, frames: Tensor, batch_size: int, beam: int = 1
    ) -> list[str]:
        """Each utterance's transcript, in eval mode: greedy for ``beam`` 1, else by prefix
        beam search."""
        out = []
        with eval_mode(model):
            for start in range(0, len(x), batch_size):
                xb, fb = x[start : start + batch_size], frames[start : start + batch_size]
                xb = xb[:, : int(fb.max())]
                logits, steps = model(xb, fb)
                found = (
                    greedy_decode(logits, steps) if beam == 1 else beam_decode(logits, steps, beam)
                )
                out += [self.labels.decode(labels) for labels in found]
        return out

    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        total = 0.0
        with eval_mode(model), torch.no_grad():
            for start in range(0, len(x), batch_size):
                loss, _ = self.loss(
                    model, x[start : start + batch_size], y[start : start + batch_size]
                )
                total += float(loss) * len(x[start : start + batch_size])
        hypotheses = self.decode(model, x, y[:, 0], batch_size)
        rates = error_rates(self.val_references, hypotheses)
        return {"val/loss": total / len(x), "val/wer": rates["wer"], "val/cer": rates["cer"]}

    def summary(self, setup: Setup, steps: int, train_s: float) -> dict[str, Any]:
        """Seconds of audio trained on per second."""
        per_utterance = setup.sizes["train/audio_s"] / max(setup.sizes["train/examples"], 1)
        audio = per_utterance * setup.batches.batch_size * steps
        return {"train/audio_s_per_s": round(audio / max(train_s, 1e-9), 1)}

    def score_split(
        self, cfg: RunConfig, model: nn.Module, data_cfg: DataConfig, split: str
    ) -> tuple[dict[str, Any], list[dict], list[str]]:
        """(the figures of ``split``, its examples, its transcripts): beam and greedy error
        rates, per voice."""
        utterances = speech.load_speech_split(data_cfg, split)
        start = time.perf_counter()
        feats, frames = featurize(utterances, cfg.data.mels)
        x, batch = pad_features(feats), cfg.train.eval_batch_size
        beamed = self.decode(model, x, frames, batch, BEAM)
        seconds = time.perf_counter() - start
        greedy = self.decode(model, x, frames, batch)
        references = [str(t) for t in utterances.texts]
        rates, plain = error_rates(references, beamed), error_rates(references, greedy)
        by_voice = collections.defaultdict(list)
        for i, v in enumerate(utterances.voices):
            by_voice[speech.VOICES[v].label].append(i)
        per_voice = {
            voice: error_rates([references[i] for i in idx], [beamed[i] for i in idx])["wer"]
            for voice, idx in sorted(by_voice.items())
        }
        figures = {
            **rates,
            **{f"greedy_{k}": v for k, v in plain.items()},
            "wer_by_voice": per_voice,
            "examples": len(utterances),
            "audio_s": round(utterances.seconds(), 1),
            "rtf": seconds / max(utterances.seconds(), 1e-9),
        }
        examples = [
            {"voice": speech.VOICES[v].label, "reference": r, "greedy": g, f"beam{BEAM}": b}
            for v, r, g, b in zip(utterances.voices, references, greedy, beamed, strict=True)
        ][:EXAMPLES]
        return figures, examples, references

    def test(
        self, cfg: RunConfig, run_dir: Path, model: nn.Module, data_cfg: DataConfig
    ) -> dict[str, Any]:
        """The unseen voices' test set (``test/...``) and the seen voices' (``test_seen/...``),
        beside the most frequent training transcript's accuracy."""
        out: dict[str, Any] = {}
        kept, references = {}, {}
        for split, prefix in (("test", "test/"), ("test_seen", "test_seen/")):
            figures, kept[split], references[split] = self.score_split(cfg, model, data_cfg, split)
            out |= {prefix + k: v for k, v in figures.items()}
        train = speech.load_speech_split(data_cfg, "train")
        common, _ = collections.Counter(str(t) for t in train.texts).most_common(1)[0]
        out["test/chance_acc"] = float(np.mean([t == common for t in references["test"]]))
        out["test/beam"] = BEAM
        out["test/units"] = self.labels.units
        write_atomic(run_dir / "test_transcripts.json", json.dumps(kept, indent=1))
        return out

    def describe(self, run_dir: Path, summary: dict, test: dict) -> list[list[str]]:
        def line(prefix: str) -> str:
            return (
                f"WER {test[prefix + 'wer']:.2%}, CER {test[prefix + 'cer']:.2%}, exact "
                f"{test[prefix + 'acc']:.2%} of {test[prefix + 'examples']} "
                f"(greedy WER {test[prefix + 'greedy_wer']:.2%})"
            )

        return [
            *super().describe(run_dir, summary, test),
            ["best val WER", self.best_val(summary, "val/wer")],
            [f"unseen voices (beam {test['test/beam']})", line("test/")],
            ["seen voices, new utterances", line("test_seen/")],
            ["most frequent transcript", f"exact {test['test/chance_acc']:.2%}"],
            ["real-time factor", f"{test['test/rtf']:.4f} (features, model, beam search)"],
            ["examples", str(run_dir / "test_transcripts.json")],
        ]
