"""Language modelling: next-token cross-entropy, bits per character and perplexity.

A run reads characters or, with ``data.tokenizer = "bpe"``, BPE tokens; bits per character
are then the bits per token times the split's tokens per character, so the two compare
(perplexity and accuracy stay per token).

With ``carry=True`` (stream batches, truncated BPTT) the task keeps a recurrent model's
hidden state from one batch to the next, detached so that gradients flow back one chunk
only; ``state_dict`` holds it, so a resumed run continues the streams exactly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab import data
from neuralab.data.batches import RandomWindows, Streams
from neuralab.data.text import BPETextTokenizer, Tokenizer, load_run_tokenizer, tokenizer_file
from neuralab.errors import UserError
from neuralab.models import LanguageModel, create_model
from neuralab.models.rnn import detach_state
from neuralab.seed import seed_everything
from neuralab.tasks.base import TASKS, Setup, Task

if TYPE_CHECKING:
    from neuralab.config import DataConfig, RunConfig

EVAL_CHUNK = 512  # a recurrent model reads long eval streams this many tokens at a time


def tokens_per_char(tokenizer: Tokenizer, tokens: Tensor) -> float:
    """How many tokens a character of this split is: 1 for characters."""
    if not isinstance(tokenizer, BPETextTokenizer):
        return 1.0
    return len(tokens) / max(len(tokenizer.decode(tokens)), 1)


def build_language_model(cfg: RunConfig, vocab_size: int) -> LanguageModel:
    """The configured language model for a vocabulary of ``vocab_size`` tokens."""
    return create_model(cfg.model.name, **{"vocab_size": vocab_size, **cfg.model.options})


@TASKS.register("language_model")
class LanguageModelTask(Task):
    """Loss and metrics of a batch of (token ids, next token ids) for a ``LanguageModel``."""

    model_kind = "text"
    monitors = ("val/loss", "val/bpc", "val/ppl", "val/acc")

    def __init__(self, vocab_size: int, carry: bool = False) -> None:
        self.num_classes = vocab_size  # each next token is a class: loss at init ~ ln(vocab)
        self.label_smoothing = 0.0
        self.carry = carry
        self.state: Any = None
        self.tokens_per_char = 1.0  # of the val split

    @classmethod
    def from_config(cls, cfg: RunConfig) -> LanguageModelTask:
        """The vocabulary size is set by ``prepare``, once the text is read."""
        return cls(0, carry=cfg.data.batching == "streams")

    def check(self, cfg: RunConfig, world_size: int = 1) -> None:
        """Stream batches carry each stream's hidden state from batch to batch: that needs a
        recurrent model, and batches that are not split into micro-batches or processes."""
        if self.carry and (cfg.train.accum_steps > 1 or world_size > 1):
            raise UserError(
                "data.batching=streams carries each stream's hidden state from batch to batch, "
                "which train.accum_steps > 1 and torchrun would split; use data.batching=windows"
            )
        super().check(cfg, world_size)

    def prepare(self, cfg: RunConfig, run_dir: Path, resume: bool) -> Setup:
        """The text's train and val tokens and the model. The tokenizer is saved in the run
        directory (``vocab.json``, or ``tokenizer.json`` for BPE) at the start and read back
        on resume, so token ids never change under a run, and sampling needs no data."""
        tokenizer = load_run_tokenizer(run_dir) if resume else None
        tokenizer, splits = data.load_token_splits(cfg.data, tokenizer)
        if not resume:
            tokenizer.save(run_dir / tokenizer_file(tokenizer))
        self.tokens_per_char = tokens_per_char(tokenizer, splits["val"])
        self.num_classes = tokenizer.vocab_size
        seed_everything(cfg.seed)
        model = build_language_model(cfg, tokenizer.vocab_size)
        block, batch_size = model.config.block_size, cfg.train.batch_size
        if self.carry:
            batches = Streams(splits["train"], batch_size, block)
            val = data.eval_streams(splits["val"])
        else:
            batches = RandomWindows(splits["train"], batch_size, block, cfg.seed)
            val = data.eval_windows(splits["val"], block)
        if self.carry and not model.recurrent:
            raise UserError(
                f"data.batching=streams carries a hidden state, which model {cfg.model.name!r} "
                "does not have; use data.batching=windows"
            )
        sizes = {"train/tokens": len(splits["train"]), "val/tokens": len(splits["val"])}
        if isinstance(tokenizer, BPETextTokenizer):
            sizes["train/tokens_per_char"] = round(tokens_per_char(tokenizer, splits["train"]), 4)
        return Setup(model, batches, val, sizes)

    def reset(self) -> None:
        """Forget the carried state: the streams start again."""
        self.state = None

    def state_dict(self) -> dict[str, Any]:
        """The carried hidden state of the streams."""
        return {"state": self.state}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.state = saved.get("state")

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean next-token cross-entropy over the (B, T) batch, and its correct-token count."""
        logits, state = model(x, self.state if self.carry else None)  # (B, T, V)
        if self.carry:
            self.state = detach_state(state)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        correct = (logits.detach().argmax(dim=-1) == y).sum()
        return loss, {"correct": correct, "count": torch.tensor(y.numel())}

    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        """The namespaced metrics the loop logs at each validation."""
        result = self.evaluate(model, x, y, batch_size)
        return {f"val/{k}": result[k] for k in ("loss", "bpc", "ppl", "acc")}

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int, per_char: float = 0.0
    ) -> dict:
        """Mean cross-entropy per token over (x, y), in nats (loss), bits per character (bpc:
        ``per_char`` tokens a character, the val split's by default) and as perplexity, with
        next-token accuracy. Rows of x are windows for a Transformer
        and whole streams for a recurrent model, which reads them with its state carried.
        ``batch_size`` counts tokens per forward pass."""
        was_training = model.training
        model.eval()
        total_loss, correct = 0.0, 0
        chunk = x.shape[1] if not getattr(model, "recurrent", False) else EVAL_CHUNK
        rows = max(1, batch_size // min(chunk, x.shape[1]))
        try:
            for r in range(0, len(x), rows):
                state = None
                for c in range(0, x.shape[1], chunk):
                    xb, yb = x[r : r + rows, c : c + chunk], y[r : r + rows, c : c + chunk]
                    logits, state = model(xb, state)
                    logits = logits.float().flatten(0, 1)
                    total_loss += F.cross_entropy(logits, yb.flatten(), reduction="sum").item()
                    correct += (logits.argmax(dim=-1) == yb.flatten()).sum().item()
        finally:
            model.train(was_training)
        n = max(y.numel(), 1)
        loss = total_loss / n
        return {
            "loss": loss,
            "bpc": loss * (per_char or self.tokens_per_char) / math.log(2),
            "ppl": math.exp(min(loss, 50.0)),
            "acc": correct / n,
            "tokens": y.numel(),
        }

    def summary(self, setup: Setup, steps: int, train_s: float) -> dict[str, Any]:
        """Training throughput in tokens per second of training steps."""
        tokens_per_step = setup.batches.batch_size * setup.batches.block_size
        return {"train/tokens_per_s": round(tokens_per_step * steps / max(train_s, 1e-9), 1)}

    def test(
        self, cfg: RunConfig, run_dir: Path, model: nn.Module, data_cfg: DataConfig
    ) -> dict[str, Any]:
        """Loss, bits per character and perplexity on the test split, read with the run's own
        vocabulary: windows of the model's context for a Transformer, long streams with the
        state carried for a recurrent model (as in validation)."""
        tokenizer = load_run_tokenizer(run_dir)
        _, splits = data.load_token_splits(data_cfg, tokenizer)
        if model.recurrent:
            x, y = data.eval_streams(splits["test"])
        else:
            x, y = data.eval_windows(splits["test"], model.config.block_size)
        per_char = tokens_per_char(tokenizer, splits["test"])
        result = self.evaluate(model, x, y, cfg.train.eval_batch_size, per_char)
        return {f"test/{k}": v for k, v in result.items()}

    def describe(self, run_dir: Path, summary: dict, test: dict) -> list[list[str]]:
        return [
            *super().describe(run_dir, summary, test),
            ["tokens/s", f"{summary['train/tokens_per_s']:,.0f} (training steps only)"],
            ["best val loss", f"{summary.get('val/loss', float('nan')):.4f}"],
            ["best step", str(summary["best_step"])],
            [
                "test loss",
                f"{test['test/loss']:.4f} nats/token on {test['test/tokens']:,} tokens",
            ],
            ["test bpc", f"{test['test/bpc']:.4f} bits/char (perplexity {test['test/ppl']:.2f})"],
        ]
