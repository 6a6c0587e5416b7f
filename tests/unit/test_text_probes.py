"""Probes of trained language models: attention maps of a GPT, cell states and gates of an
LSTM (Karpathy et al. 2015)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neuralab import config
from neuralab.errors import UserError
from neuralab.probe.attention import attention_run
from neuralab.probe.lstm_cells import correlations, lstm_run, saturation, text_features
from neuralab.train import fit, new_run_dir

TEXT = "".join(
    f'ROMEO: "Line {i}" (aside) goes here.\nJULIET: and {i % 7} more words.\n' for i in range(80)
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny GPT run and a tiny LSTM run on the same small text, 30 steps each."""
    root = tmp_path_factory.mktemp("probes")
    (root / "t.txt").write_text(TEXT)
    common = [f"data.path={root / 't.txt'}", "train.max_steps=30", "train.val_every=30"]
    out = {}
    for name, model in {
        "gpt": ["model.name=gpt", "model.n_layer=2", "model.d_model=32", "model.n_heads=2"],
        "lstm": ["model.name=lstm", "model.n_layer=2", "model.d_hidden=24"],
    }.items():
        cfg = config.load(None, [*common, *model, "model.block_size=32", "train.batch_size=8"])
        run_dir = new_run_dir(root / name, cfg)
        fit(cfg, run_dir, progress=False)
        out[name] = run_dir
    return out


def test_attention_maps_are_causal_distributions(runs):
    """Every head's map is (T, T), rows sum to 1, nothing above the diagonal (no head reads
    the future); one PNG per layer and the maps in probes/attention.json."""
    summary = attention_run(runs["gpt"], "ROMEO: goes here.")
    assert (summary["layers"], summary["heads"]) == (2, 2)
    assert summary["row_sum_max_error"] < 1e-5
    saved = json.loads((runs["gpt"] / "probes" / "attention.json").read_text())
    maps = torch.tensor(saved["maps"])  # (L, nh, T, T)
    assert maps.shape == (2, 2, 17, 17)
    assert torch.all(maps.triu(diagonal=1) == 0)
    plots = runs["gpt"] / "plots"
    assert all((plots / f"attention_layer{i}.png").stat().st_size > 0 for i in (0, 1))
    for heads in summary["per_layer"]:
        assert all(0 <= e <= summary["max_uniform_entropy"] + 1e-6 for e in heads["entropy"])


def test_attention_keeps_the_last_context_and_rejects_other_models(runs):
    """A prompt longer than the context keeps its last block_size characters; an LSTM run
    has no attention to show; an empty prompt is refused."""
    summary = attention_run(runs["gpt"], "ROMEO: " * 10)
    assert summary["truncated"] and len(summary["text"]) == 32
    with pytest.raises(UserError, match="has no attention"):
        attention_run(runs["lstm"], "ROMEO")
    with pytest.raises(UserError, match="empty"):
        attention_run(runs["gpt"], "")


def test_text_features_mark_what_they_say():
    """Hand-checked features of a small text: quotes, parentheses, column, line end, and
    all-capitals words."""
    f = text_features('AB "c" (d)\nx')
    # A B ␣ " c " ␣ ( d ) ⏎ x: the opening mark and what follows it are inside
    assert f["inside_quotes"].tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert f["inside_parentheses"].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    assert f["position_in_line"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0]
    assert f["line_end"].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    assert f["capitals_word"].tolist()[:3] == [1, 1, 0]


def test_correlations_and_saturation_against_numpy():
    """Per-unit correlation equals numpy's corrcoef; saturation fractions count the steps
    below 0.1 and above 0.9."""
    g = torch.Generator().manual_seed(0)
    states = torch.randn(2, 50, 3, generator=g, dtype=torch.float64)
    feature = torch.randn(50, generator=g, dtype=torch.float64)
    r = correlations(states, feature)
    for layer in range(2):
        for unit in range(3):
            expected = np.corrcoef(states[layer, :, unit].numpy(), feature.numpy())[0, 1]
            assert r[layer, unit].item() == pytest.approx(expected, abs=1e-12)
    gate = torch.tensor([[[0.05], [0.5], [0.95], [0.99]]])  # (L=1, T=4, H=1)
    left, right = saturation(gate)
    assert left.item() == 0.25 and right.item() == 0.5


def test_lstm_probe_writes_cells_and_gates(runs):
    """The LSTM probe ranks cells for every feature present in the text, renders each
    ranked cell's state over every character as HTML, and plots gate saturation."""
    summary = lstm_run(runs["lstm"], TEXT[:400])
    assert (summary["layers"], summary["units"], summary["characters"]) == (2, 24, 400)
    present = [n for n, f in summary["features"].items() if f["present"]]
    assert set(present) == {
        "inside_quotes",
        "inside_parentheses",
        "position_in_line",
        "line_end",
        "capitals_word",
    }
    for name in present:
        for unit in summary["features"][name]["top"]:
            assert -1 <= unit["r"] <= 1
    page = (runs["lstm"] / "probes" / "lstm_cells.html").read_text()
    assert page.count("<span") == 400 * 2 * len(present)
    assert (runs["lstm"] / "plots" / "lstm_gates.png").stat().st_size > 0
    for gate in summary["mean_gate_saturation"].values():
        assert 0 <= gate["left"] <= 1 and 0 <= gate["right"] <= 1
    with pytest.raises(UserError, match="needs an lstm run"):
        lstm_run(runs["gpt"], TEXT[:100])
