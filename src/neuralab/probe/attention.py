"""Attention maps: where every head of every layer of a trained GPT looks, for a text prompt.

The maps come from the ``manual`` attention path (``GPT.attention_maps``), the only one that
materialises softmax(QKᵀ/√d) — the fused kernel never builds it. Row t of a map is the
distribution over the characters ≤ t that position t reads from; each PNG shows every head
of one layer with the prompt's characters on both axes, so patterns such as "previous
character", "start of the word" or "same letter earlier" can be read off directly
(Vig 2019, "A Multiscale Visualization of Attention in the Transformer Model").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neuralab.data.text import char_tokenizer_of
from neuralab.errors import UserError
from neuralab.plots import save_figure, subplots


def _label(ch: str) -> str:
    return {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(ch, ch)


def plot_attention_layer(maps: Tensor, chars: list[str], layer: int, out: Path) -> Path:
    """One layer's (nh, T, T) weights as a row of heatmaps, characters on both axes."""
    heads, length = maps.shape[0], maps.shape[-1]
    size = max(3.0, min(8.0, 0.12 * length))
    fig, axes = subplots(1, heads, figsize=(size * heads, size + 0.6), squeeze=False)
    labels = [_label(c) for c in chars]
    fontsize = max(4, min(9, int(300 / max(length, 1))))
    for h, ax in enumerate(axes[0]):
        ax.imshow(maps[h].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(length), labels, fontsize=fontsize)
        ax.set_yticks(range(length), labels, fontsize=fontsize)
        ax.set_title(f"layer {layer}, head {h}", fontsize=9)
        ax.set_xlabel("attends to (key)", fontsize=8)
        ax.set_ylabel("position (query)", fontsize=8)
    return save_figure(fig, out)


def head_summary(maps: Tensor) -> dict[str, list[float]]:
    """Per head of a (nh, T, T) causal map: mean entropy of its rows in nats (0: looks at one
    character; ln(t+1) at row t: uniform) and the mean weight on the previous character."""
    entropy = -(maps * maps.clamp_min(1e-12).log()).sum(dim=-1).mean(dim=-1)  # (nh,)
    previous = maps.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=-1)  # (nh,)
    return {"entropy": entropy.tolist(), "previous_char": previous.tolist()}


def attention_run(run_dir: str | Path, text: str, which: str = "best") -> dict[str, Any]:
    """Attention maps of every head of every layer of the GPT in ``run_dir`` for ``text``.

    Writes ``plots/attention_layer<l>.png`` per layer and ``probes/attention.json`` (the
    maps and a per-head summary) into the run directory; returns the summary. A prompt
    longer than the model's context keeps its last ``block_size`` characters.
    """
    from neuralab.train import load_model  # lazily: probes never import training at import

    run_dir = Path(run_dir)
    tokenizer = char_tokenizer_of(run_dir)
    model = load_model(run_dir, which)
    if not hasattr(model, "attention_maps"):
        raise UserError(
            f"{run_dir} holds a {type(model).__name__}, which has no attention; "
            "probe attention needs a GPT run"
        )
    if not text:
        raise UserError("--text is empty; give the characters to look at")
    block = model.config.block_size
    kept = text[-block:]
    idx = tokenizer.encode(kept)[None, :]  # (1, T)
    with torch.no_grad():
        maps = [m[0].float() for m in model.attention_maps(idx)]  # L x (nh, T, T)
    chars = list(kept)
    plots = run_dir / "plots"
    pngs = [
        str(plot_attention_layer(m, chars, layer, plots / f"attention_layer{layer}.png"))
        for layer, m in enumerate(maps)
    ]
    worst_row = max((m.sum(dim=-1) - 1).abs().max().item() for m in maps)
    summary = {
        "run": str(run_dir),
        "text": kept,
        "truncated": len(kept) < len(text),
        "layers": len(maps),
        "heads": maps[0].shape[0],
        "row_sum_max_error": worst_row,
        "max_uniform_entropy": math.log(len(kept)),
        "per_layer": [head_summary(m) for m in maps],
        "png": pngs,
    }
    out = run_dir / "probes" / "attention.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**summary, "maps": [m.tolist() for m in maps]}) + "\n")
    return summary
