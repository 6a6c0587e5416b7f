"""Text classifiers over token ids (B, L), padded with ``pad_id``, -> (B, num_classes) logits.

- ``text_cnn``: Kim 2014 ("Convolutional Neural Networks for Sentence Classification"):
  embeddings, convolutions of widths 3, 4 and 5 (100 filters each), max over the windows
  that start on a real token (zeros past the text's end), dropout 0.5, the classifier.
- ``text_bilstm``: embeddings, a bidirectional LSTM (torch's fused one, packed so padding
  never enters it), the mean and the max of its outputs over the real tokens.
- ``text_transformer``: a ``<cls>`` token before the text, learned positions, pre-LN
  Transformer encoder blocks (``models/attention.py``) with padding masks (a padded position
  gets no attention weight), the ``<cls>`` output classified (BERT's recipe).
- ``text_gpt``: a GPT (``models/gpt``) read left to right, the mean and the max of its last
  layer over the real tokens classified: GPT-1's fine-tuning (Radford et al. 2018, "Improving
  Language Understanding by Generative Pre-Training") with ULMFiT's pooling (Howard & Ruder
  2018). Its tensors are named as a GPT's, so ``train.init_from`` starts it from a GPT language
  model of the same texts (``bible_genre_lm``); without it, the same network from scratch. A
  token never reads a later one, so the padding after a text cannot change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from neuralab.models.attention import Block
from neuralab.models.base import check, register_model
from neuralab.models.gpt import GPT, GPTConfig

ARCHS = ("cnn", "bilstm", "transformer")


@dataclass(frozen=True)
class TextClassifierConfig:
    vocab_size: int = 4000
    num_classes: int = 8
    pad_id: int = 0
    cls_id: int = 1  # the transformer's first token
    max_tokens: int = 96  # the longest text it reads, <cls> excluded
    arch: str = "cnn"
    d_embed: int = 128
    widths: tuple[int, ...] = (3, 4, 5)  # cnn: the convolutions' widths
    filters: int = 100  # cnn: filters per width
    hidden: int = 128  # bilstm: each direction's state
    n_layers: int = 2  # transformer
    n_heads: int = 4  # transformer
    dropout: float = 0.5

    def __post_init__(self) -> None:
        check(self.arch in ARCHS, f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        check(self.vocab_size >= 2, f"vocab_size must be >= 2, got {self.vocab_size}")
        check(self.num_classes >= 2, f"num_classes must be >= 2, got {self.num_classes}")
        for key in ("pad_id", "cls_id"):
            value = getattr(self, key)
            check(0 <= value < self.vocab_size, f"{key} must be in [0, vocab_size), got {value}")
        check(self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens}")
        check(self.d_embed >= 1 and self.hidden >= 1, "d_embed and hidden must be >= 1")
        check(self.widths and min(self.widths) >= 1, f"widths must be >= 1, got {self.widths}")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        if self.arch == "transformer":
            check(self.d_embed % self.n_heads == 0, "d_embed must be a multiple of n_heads")


class TextClassifier(nn.Module):
    """One of ``ARCHS`` (see the module's docstring)."""

    Config: ClassVar[type[TextClassifierConfig]] = TextClassifierConfig
    kind: ClassVar[str] = "textclass"

    def __init__(self, config: TextClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_embed, padding_idx=c.pad_id)
        self.dropout = nn.Dropout(c.dropout)
        if c.arch == "cnn":
            self.convs = nn.ModuleList(nn.Conv1d(c.d_embed, c.filters, w) for w in c.widths)
            features = c.filters * len(c.widths)
        elif c.arch == "bilstm":
            self.lstm = nn.LSTM(c.d_embed, c.hidden, batch_first=True, bidirectional=True)
            features = 4 * c.hidden  # mean and max of both directions
        else:
            self.pos = nn.Parameter(0.02 * torch.randn(1, c.max_tokens + 1, c.d_embed))
            self.blocks = nn.ModuleList(
                Block(c.d_embed, c.n_heads, causal=False, dropout=0.1) for _ in range(c.n_layers)
            )
            self.ln = nn.LayerNorm(c.d_embed)
            features = c.d_embed
        self.head = nn.Linear(features, c.num_classes)

    def forward_features(self, ids: Tensor) -> Tensor:
        """(B, L) token ids -> (B, features)."""
        c = self.config
        check(
            ids.dim() == 2 and 1 <= ids.shape[1] <= c.max_tokens,
            f"expected (B, L) token ids with 1 <= L <= {c.max_tokens}, got {tuple(ids.shape)}",
        )
        real = ids != c.pad_id  # (B, L)
        if c.arch == "cnn":
            # every window that starts on a real token exists, however much padding follows
            extra = max(c.widths) - 1
            x = nn.functional.pad(self.embed(ids).transpose(1, 2), (0, extra))  # (B, d, L')
            real = nn.functional.pad(real, (0, extra))
            pooled = []
            for conv in self.convs:
                h = torch.relu(conv(x))  # (B, filters, L' - width + 1)
                starts = real[:, : h.shape[2]]  # a window counts if it starts on a real token
                pooled.append(h.masked_fill(~starts[:, None], float("-inf")).amax(2).clamp(min=0))
            return torch.cat(pooled, 1)
        if c.arch == "bilstm":
            lengths = real.sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(
                self.embed(ids), lengths, batch_first=True, enforce_sorted=False
            )
            out, _ = self.lstm(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(
                out, batch_first=True, total_length=ids.shape[1]
            )  # (B, L, 2h), zeros past each text
            mask = real[..., None]
            mean = out.sum(1) / lengths.to(out.device)[:, None]
            top = out.masked_fill(~mask, float("-inf")).amax(1)
            return torch.cat([mean, top.clamp(min=-1e4)], 1)
        cls = torch.full_like(ids[:, :1], c.cls_id)
        tokens = torch.cat([cls, ids], 1)
        keep = torch.cat([torch.ones_like(real[:, :1]), real], 1)
        x = self.embed(tokens) + self.pos[:, : tokens.shape[1]]
        for block in self.blocks:
            x = block(x, keep=keep)
        return self.ln(x[:, 0])

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.dropout(self.forward_features(ids)))

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


for _arch in ARCHS:
    register_model(f"text_{_arch}", arch=_arch)(TextClassifier)


@dataclass(frozen=True)
class TextGPTConfig(GPTConfig):
    num_classes: int = 8
    pad_id: int = 0
    cls_id: int = 1  # unused: the pooled tokens are classified, not a <cls>
    max_tokens: int = 96  # the longest text it reads (at most block_size)
    head_dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.num_classes >= 2, f"num_classes must be >= 2, got {self.num_classes}")
        check(0 <= self.pad_id < self.vocab_size, "pad_id must be in [0, vocab_size)")
        check(
            1 <= self.max_tokens <= self.block_size,
            f"max_tokens must be in [1, block_size={self.block_size}], got {self.max_tokens}",
        )
        check(0 <= self.head_dropout < 1, f"head_dropout must be in [0, 1): {self.head_dropout}")


@register_model("text_gpt", block_size=128)
class TextGPT(GPT):
    """``text_gpt`` (see the module's docstring): (B, L) token ids -> (B, classes) logits."""

    Config = TextGPTConfig
    kind: ClassVar[str] = "textclass"

    def __init__(self, config: TextGPTConfig) -> None:
        super().__init__(config)
        self.head_drop = nn.Dropout(config.head_dropout)
        self.classifier = nn.Linear(2 * config.d_model, config.num_classes)

    def forward_features(self, ids: Tensor) -> Tensor:
        """(B, L) token ids -> (B, 2 d_model): the mean and the max over the real tokens."""
        c = self.config
        check(
            ids.dim() == 2 and 1 <= ids.shape[1] <= c.max_tokens,
            f"expected (B, L) token ids with 1 <= L <= {c.max_tokens}, got {tuple(ids.shape)}",
        )
        h, _ = self._body(ids, need_weights=False)  # (B, L, d)
        real = (ids != c.pad_id)[..., None]
        mean = (h * real).sum(1) / real.sum(1).clamp(min=1)
        top = h.masked_fill(~real, float("-inf")).amax(1).clamp(min=-1e4)
        return torch.cat([mean, top], 1)

    def forward(self, ids: Tensor) -> Tensor:
        return self.classifier(self.head_drop(self.forward_features(ids)))
