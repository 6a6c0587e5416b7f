"""A GPT: a decoder-only Transformer language model, after Radford et al. 2019, "Language Models
are Unsupervised Multitask Learners" (GPT-2), as distilled by Karpathy's nanoGPT.

Token embedding ``wte`` plus a learned position embedding ``wpe`` (one row per position of the
``block_size`` context), dropout, ``n_layer`` causal pre-LN blocks, a final LayerNorm and a
linear ``head`` to the vocabulary. With ``tie_weights`` the head shares its weight with
``wte`` (Press & Wolf 2017, "Using the Output Embedding to Improve Language Models"): one
(vocab_size, d_model) matrix both reads and writes tokens, and is counted once.

Two modern options (the presets use both; the defaults are GPT-2's): ``pos_embed="rope"``
replaces the learned position table by rotary embeddings of queries and keys (Su et al. 2021),
and ``activation="relu2"`` the MLP's GELU by ReLU² (So et al. 2021, "Primer"), each of which
reached a given loss in fewer steps in its paper; ``benchmarks/lm.py`` measures what they buy
here (figures in the README).

Initialisation is GPT-2's: normal(0, 0.02) weights, zero biases, and the projections that
write into the residual stream (attention ``proj`` and MLP ``proj``) scaled down to
normal(0, 0.02 / √(2 n_layer)), so the stream's variance does not grow with depth (§2.3).

A Transformer has no carried state: ``forward(idx)`` returns None as the state, and
``generate`` re-reads the last ``block_size`` tokens at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neuralab.models.attention import (
    ATTN_IMPLS,
    MLP_ACTIVATIONS,
    Block,
    KVCache,
    run_blocks,
)
from neuralab.models.base import (
    LanguageModel,
    TextModelConfig,
    check,
    check_choice,
    register_model,
)
from neuralab.models.cached import CachedBlocks


@dataclass(frozen=True)
class GPTConfig(TextModelConfig):
    n_layer: int = 4
    n_heads: int = 4
    d_model: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in every Linear and LayerNorm (GPT-2 has them)
    attn_impl: str = "sdpa"  # "sdpa": fused kernel; "manual": the formula, spelled out
    tie_weights: bool = True  # head.weight is wte.weight
    pos_embed: str = "learned"  # "learned": a table of block_size rows; "rope": rotary
    activation: str = "gelu"  # of the MLP: "gelu" (GPT-2) or "relu2" (Primer)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_layer >= 1, f"n_layer must be >= 1, got {self.n_layer}")
        check(self.n_heads >= 1, f"n_heads must be >= 1, got {self.n_heads}")
        check(
            self.d_model >= 1 and self.d_model % self.n_heads == 0,
            f"d_model={self.d_model} must be a positive multiple of n_heads={self.n_heads}",
        )
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check_choice("attn_impl", self.attn_impl, ATTN_IMPLS)
        check_choice("pos_embed", self.pos_embed, ("learned", "rope"))
        check_choice("activation", self.activation, MLP_ACTIVATIONS)
        check(
            self.pos_embed != "rope" or (self.d_model // self.n_heads) % 2 == 0,
            f"rotary embeddings need an even head size, got d_model/n_heads = "
            f"{self.d_model // self.n_heads}",
        )


@register_model("gpt")
class GPT(LanguageModel):
    Config = GPTConfig
    recurrent = False

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        d = config.d_model
        self.wte = nn.Embedding(config.vocab_size, d)
        self.wpe = nn.Embedding(config.block_size, d) if config.pos_embed == "learned" else None
        rope_len = config.block_size if config.pos_embed == "rope" else 0
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(
                d,
                config.n_heads,
                causal=True,
                dropout=config.dropout,
                attn_impl=config.attn_impl,
                bias=config.bias,
                activation=config.activation,
                rope_len=rope_len,
            )
            for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(d, bias=config.bias)
        self.head = nn.Linear(d, config.vocab_size, bias=False)
        if config.tie_weights:
            self.head.weight = self.wte.weight  # one Parameter, two uses
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2's init: N(0, 0.02) weights, zero biases, residual projections / √(2 n_layer)."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=std)

    def _body(
        self, idx: torch.Tensor, need_weights: bool, caches: list[KVCache] | None = None
    ) -> tuple[torch.Tensor, list]:
        B, T = idx.shape
        start = 0 if caches is None else len(caches[0])  # positions already in the caches
        check(
            start + T <= self.config.block_size,
            f"sequence of {start + T} tokens is longer than block_size={self.config.block_size}",
        )
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))  # + (T, C)
        x = self.drop(x)
        x, maps = run_blocks(self.blocks, x, need_weights, caches)  # (B, T, C)
        return self.ln_f(x), maps

    def _next_logits(
        self, idx: torch.Tensor, new: torch.Tensor, state: CachedBlocks | None
    ) -> tuple[torch.Tensor, CachedBlocks]:
        """Generation with a KV cache: each block keeps the keys and values of the context, so
        a new token is read once. The context is the last ``block_size`` tokens of the prompt;
        when it is full, it shifts: the caches restart from the last ``block_size // 2``
        tokens, read again in one pass (so every token sees at least half a block before it,
        and the positions stay within the table the model was trained on)."""
        size = self.config.block_size
        if state is None:
            new, state = idx[:, -size:], CachedBlocks(self.blocks)
        elif len(state) + new.shape[1] > size:
            new = idx[:, -max(size // 2, 1) :]
            state.restart()
        elif not self.training and not torch.is_autocast_enabled(new.device.type):
            at = len(state)  # one more token after the prompt: without module calls
            x = F.embedding(new[:, -1], self.wte.weight)  # (B, C)
            if self.wpe is not None:
                x = x + self.wpe.weight[at]
            ln_f = self.ln_f
            x = F.layer_norm(state.step(x), ln_f.normalized_shape, ln_f.weight, ln_f.bias, ln_f.eps)
            return F.linear(x, self.head.weight, self.head.bias), state
        features, _ = self._body(new, need_weights=False, caches=state.caches)
        return self.head(features[:, -1, :]), state

    def forward_features(self, idx: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, None]:
        """(B, T) token ids, T <= block_size -> ((B, T, d_model) after the final LayerNorm,
        None: a Transformer carries no state, so ``state`` is ignored)."""
        features, _ = self._body(idx, need_weights=False)
        return features, None

    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """One (B, n_heads, T, T) map of attention weights per layer, first layer first (rows
        sum to 1; entries above the diagonal are 0). Runs the manual attention path; call it
        under ``torch.no_grad()`` and in eval mode unless you want gradients or dropout."""
        return self._body(idx, need_weights=True)[1]
