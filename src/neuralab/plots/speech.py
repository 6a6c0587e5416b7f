"""Figures of speech: utterances as waveforms over their log-mel spectrograms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from neuralab.plots import save_figure, subplots


def plot_spectrograms(
    waves: Sequence[np.ndarray], feats: Sequence[np.ndarray], titles: Sequence[str], out: Path
) -> Path:
    """One row per utterance: its waveform (16 kHz samples) above its (frames, mels) log-mel
    spectrogram (10 ms a frame), titled (its transcript, voice and SNR)."""
    fig, axes = subplots(
        2 * len(waves), 1, figsize=(7, 2.3 * len(waves)), squeeze=False,
        gridspec_kw={"height_ratios": [1, 2] * len(waves)},
    )  # fmt: skip
    for i, (wave, feat, title) in enumerate(zip(waves, feats, titles, strict=True)):
        top, bottom = axes[2 * i, 0], axes[2 * i + 1, 0]
        seconds = len(wave) / 16000
        top.plot(np.arange(len(wave)) / 16000, wave, linewidth=0.3, color="0.2")
        top.set_xlim(0, seconds)
        top.set_yticks([])
        top.set_xticks([])
        top.set_title(title, fontsize=9, loc="left")
        bottom.imshow(
            feat.T,
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=(0, seconds, 0, feat.shape[1]),
        )
        bottom.set_ylabel("mel band", fontsize=8)
    axes[-1, 0].set_xlabel("seconds")
    return save_figure(fig, out)
