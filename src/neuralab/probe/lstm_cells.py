"""Inside a character LSTM, after Karpathy, Johnson & Fei-Fei (2015), "Visualizing and
Understanding Recurrent Networks".

The model reads a text once (its ``trace``: every layer's cell states and gates at every
character). Each cell unit is then ranked by the correlation of its cell state with simple
features of the text — inside quotes, inside parentheses, position in the line, the last
character of a line, inside an all-capitals word (the speaker names of a play) — and the
best units are rendered as HTML, each character coloured by the unit's tanh(c). Gate
saturation (the paper's Fig. 3) is the fraction of characters at which a gate is
left-saturated (< 0.1) or right-saturated (> 0.9), per unit, for the input, forget and
output gates.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neuralab.data.text import char_tokenizer_of
from neuralab.errors import UserError
from neuralab.plots import save_figure, subplots

SATURATED = 0.1  # a gate below 0.1 is left-saturated, above 0.9 right-saturated


def text_features(text: str) -> dict[str, Tensor]:
    """Per-character float features of ``text``, each (len(text),)."""
    n = len(text)
    quotes, parens, position, line_end, caps = (torch.zeros(n) for _ in range(5))
    inside, depth, column = False, 0, 0
    for t, ch in enumerate(text):
        if ch == '"':
            inside = not inside
        depth = depth + 1 if ch == "(" else max(depth - 1, 0) if ch == ")" else depth
        quotes[t], parens[t] = float(inside), float(depth > 0)
        position[t] = column
        column = 0 if ch == "\n" else column + 1
        line_end[t] = float(t + 1 < n and text[t + 1] == "\n")
    for start, word in _words(text):
        if len(word) >= 2 and word.isupper():
            caps[start : start + len(word)] = 1.0
    return {
        "inside_quotes": quotes,
        "inside_parentheses": parens,
        "position_in_line": position,
        "line_end": line_end,
        "capitals_word": caps,
    }


def _words(text: str) -> list[tuple[int, str]]:
    words, start = [], None
    for t, ch in enumerate(text + " "):
        if ch.isalpha():
            start = t if start is None else start
        elif start is not None:
            words.append((start, text[start:t]))
            start = None
    return words


def correlations(states: Tensor, feature: Tensor) -> Tensor:
    """Pearson correlation of every unit's state with ``feature``: (L, T, H), (T,) -> (L, H).
    A constant feature (absent from the text) gives NaN."""
    s = states - states.mean(dim=1, keepdim=True)
    f = feature - feature.mean()
    cov = (s * f[None, :, None]).mean(dim=1)
    return cov / (s.square().mean(dim=1).sqrt() * f.square().mean().sqrt())


def saturation(gate: Tensor) -> tuple[Tensor, Tensor]:
    """Fractions of time each unit's gate is left- and right-saturated: (L, T, H) -> 2 x (L, H)."""
    return (gate < SATURATED).float().mean(dim=1), (gate > 1 - SATURATED).float().mean(dim=1)


def render_units(text: str, cells: Tensor, units: list[dict[str, Any]], out: Path) -> Path:
    """A self-contained HTML page: the text once per unit, each character's background
    coloured by the unit's tanh(c) (blue -1, white 0, red +1)."""
    sections = []
    for unit in units:
        values = torch.tanh(cells[unit["layer"], :, unit["unit"]]).tolist()
        spans = []
        for ch, v in zip(text, values, strict=True):
            shade = int(255 * (1 - abs(v)))
            color = f"255,{shade},{shade}" if v > 0 else f"{shade},{shade},255"
            shown = "⏎<br>" if ch == "\n" else html.escape(ch)
            spans.append(f'<span style="background:rgb({color})">{shown}</span>')
        head = (
            f"layer {unit['layer']}, unit {unit['unit']}: {unit['feature']} (r = {unit['r']:+.2f})"
        )
        sections.append(f"<h2>{html.escape(head)}</h2><pre>{''.join(spans)}</pre>")
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>LSTM cells</title>'
        "<style>body{font-family:sans-serif;margin:2em}pre{font-size:13px;line-height:1.5;"
        "white-space:pre-wrap}h2{font-size:15px}</style></head><body>"
        "<h1>LSTM cell states</h1><p>Background: tanh(c) of one unit at each character "
        "(blue -1, white 0, red +1), after Karpathy et al. 2015.</p>"
        + "".join(sections)
        + "</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def plot_saturation(trace: dict[str, Tensor], out: Path) -> Path:
    """Per layer, left- against right-saturated fraction of every unit's i, f and o gates."""
    layers = trace["c"].shape[0]
    fig, axes = subplots(1, layers, figsize=(4.2 * layers, 4), squeeze=False)
    for layer, ax in enumerate(axes[0]):
        for gate, color in (("i", "tab:blue"), ("f", "tab:green"), ("o", "tab:red")):
            left, right = saturation(trace[gate][:, 0])
            ax.scatter(left[layer], right[layer], s=6, alpha=0.6, color=color, label=f"{gate} gate")
        ax.plot([0, 1], [1, 0], color="gray", linewidth=0.5)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"layer {layer}")
        ax.set(xlabel="fraction left-saturated (< 0.1)", ylabel="fraction right-saturated (> 0.9)")
        ax.legend(fontsize=8)
    return save_figure(fig, out)


def lstm_run(run_dir: str | Path, text: str, which: str = "best", top: int = 2) -> dict[str, Any]:
    """Trace the LSTM of ``run_dir`` over ``text``; rank its cells by correlation with each
    text feature; write ``probes/lstm_cells.html``, ``plots/lstm_gates.png`` and
    ``probes/lstm_cells.json``; return the summary."""
    from neuralab.train import load_model  # lazily: probes never import training at import

    run_dir = Path(run_dir)
    tokenizer = char_tokenizer_of(run_dir)
    model = load_model(run_dir, which)
    if getattr(model.config, "cell", None) != "lstm":
        raise UserError(f"{run_dir} does not hold an LSTM; probe lstm needs an lstm run")
    if len(text) < 10:
        raise UserError(f"the text has {len(text)} characters; give at least 10")
    idx = tokenizer.encode(text)[None, :]  # (1, T)
    with torch.no_grad():
        trace = {k: v.float() for k, v in model.trace(idx).items()}
    cells = trace["c"][:, 0]  # (L, T, H)
    ranked, features = [], {}
    for name, feature in text_features(text).items():
        r = correlations(cells, feature)  # (L, H)
        if torch.isnan(r).all():
            features[name] = {"present": False}
            continue
        order = r.nan_to_num(0).abs().flatten().argsort(descending=True)[:top]
        best = []
        for flat in order.tolist():
            layer, unit = divmod(flat, r.shape[1])
            best.append({"feature": name, "layer": layer, "unit": unit, "r": r[layer, unit].item()})
        features[name] = {"present": True, "top": best}
        ranked += best
    page = render_units(text, cells, ranked, run_dir / "probes" / "lstm_cells.html")
    png = plot_saturation(trace, run_dir / "plots" / "lstm_gates.png")
    gates = {}
    for gate in ("i", "f", "o"):
        left, right = saturation(trace[gate][:, 0])
        gates[gate] = {"left": left.mean().item(), "right": right.mean().item()}
    summary = {
        "run": str(run_dir),
        "characters": len(text),
        "layers": cells.shape[0],
        "units": cells.shape[2],
        "features": features,
        "mean_gate_saturation": gates,
        "html": str(page),
        "png": str(png),
    }
    (run_dir / "probes" / "lstm_cells.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
