"""Language modelling: next-token cross-entropy, bits per character and perplexity.

With ``carry=True`` (stream batches, truncated BPTT) the task keeps a recurrent model's
hidden state from one batch to the next, detached so that gradients flow back one chunk
only; ``state_dict`` holds it, so a resumed run continues the streams exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EVAL_CHUNK = 512  # a recurrent model reads long eval streams this many tokens at a time


def detach_state(state: Any) -> Any:
    """``state`` (None, a tensor, or nested tuples/lists of tensors) cut from the graph."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


class LanguageModelTask:
    """Loss and metrics of a batch of (token ids, next token ids) for a ``LanguageModel``."""

    def __init__(self, vocab_size: int, carry: bool = False) -> None:
        self.num_classes = vocab_size  # each next token is a class: loss at init ~ ln(vocab)
        self.label_smoothing = 0.0
        self.carry = carry
        self.state: Any = None

    def reset(self) -> None:
        """Forget the carried state: the streams start again."""
        self.state = None

    def state_dict(self) -> dict[str, Any]:
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
    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        """Mean cross-entropy per token over (x, y), in nats (loss), bits (bpc) and as
        perplexity, with next-token accuracy. Rows of x are windows for a Transformer
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
            "bpc": loss / math.log(2),
            "ppl": math.exp(min(loss, 50.0)),
            "acc": correct / n,
            "tokens": y.numel(),
        }
