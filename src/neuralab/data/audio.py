"""Features of speech: log-mel spectrograms and SpecAugment, in torch (the audio itself is
read and written by ``data.wav``).

The features are the log of a mel power spectrogram: a Hann window of ``WINDOW`` samples
(25 ms) every ``HOP`` samples (10 ms), zero-padded at both ends (centred frames), the power
spectrum weighted by Slaney's area-normalised triangular mel filters (librosa's defaults,
``htk=False, norm="slaney"``), then ``log(mel + 1e-6)``. A test checks them against
``librosa.feature.melspectrogram``. SpecAugment (Park et al. 2019) masks random bands of
mels and runs of frames, per utterance, as batched tensor ops.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from neuralab.data.wav import SAMPLE_RATE

WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
EPS = 1e-6


def hz_to_mel(hz: Tensor) -> Tensor:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = math.log(6.4) / 27.0
    linear = hz / f_sp
    return torch.where(
        hz >= min_log_hz, min_log_hz / f_sp + torch.log(hz / min_log_hz) / logstep, linear
    )


def mel_to_hz(mel: Tensor) -> Tensor:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(
        mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel
    )


def mel_filterbank(n_mels: int, n_fft: int = WINDOW, rate: int = SAMPLE_RATE) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters from 0 Hz to Nyquist, evenly spaced on the
    mel scale, each scaled to unit area in Hz (Slaney's normalisation)."""
    fft_hz = torch.linspace(0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(
        torch.linspace(0, float(hz_to_mel(torch.tensor(rate / 2.0))), n_mels + 2).double()
    )
    widths = edges.diff()
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.float()


def log_mel(audio: Tensor, n_mels: int = 40) -> Tensor:
    """(..., frames, n_mels) log-mel features of (..., samples) audio at ``SAMPLE_RATE``;
    frame t is centred on sample t·``HOP``, so there are samples // HOP + 1 frames."""
    lead = audio.shape[:-1]
    spec = torch.stft(
        audio.reshape(-1, audio.shape[-1]).float(),
        n_fft=WINDOW,
        hop_length=HOP,
        window=torch.hann_window(WINDOW, device=audio.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spec.real**2 + spec.imag**2  # (B, freq, frames)
    mel = mel_filterbank(n_mels).to(audio.device) @ power
    return torch.log(mel + EPS).transpose(1, 2).reshape(*lead, -1, n_mels)


def frames_of(samples: int | Tensor) -> int | Tensor:
    """How many feature frames ``log_mel`` makes of ``samples`` samples."""
    return samples // HOP + 1


def spec_augment(
    feats: Tensor,
    lengths: Tensor,
    gen: torch.Generator,
    fill: Tensor | float = 0.0,
    freq_masks: int = 2,
    freq_width: int = 8,
    time_masks: int = 2,
    time_fraction: float = 0.1,
) -> Tensor:
    """``feats`` (B, T, F) with, per utterance, ``freq_masks`` bands of up to ``freq_width``
    mels and ``time_masks`` runs of up to ``time_fraction`` of its frames set to ``fill`` (the
    training features' per-mel mean, which a model normalises to 0), drawn from ``gen``; a
    new tensor."""
    b, t, f = feats.shape
    keep = torch.ones(b, t, f, dtype=torch.bool)
    mel_index, frame_index = torch.arange(f), torch.arange(t)
    for _ in range(freq_masks):
        width = torch.randint(0, freq_width + 1, (b,), generator=gen)
        start = (torch.rand(b, generator=gen) * (f - width + 1)).long()
        band = (mel_index >= start[:, None]) & (mel_index < (start + width)[:, None])
        keep &= ~band[:, None, :]
    for _ in range(time_masks):
        width = (torch.rand(b, generator=gen) * time_fraction * lengths).long()
        start = (torch.rand(b, generator=gen) * (lengths - width + 1)).long()
        run = (frame_index >= start[:, None]) & (frame_index < (start + width)[:, None])
        keep &= ~run[:, :, None]
    return torch.where(keep, feats, fill)


def warp_frequency(feats: Tensor, gen: torch.Generator, low: float, high: float) -> Tensor:
    """Vocal tract length perturbation (Jaitly & Hinton 2013) of (B, T, mels) features: per
    utterance a factor α drawn log-uniform from [``low``, ``high``] scales every frequency by
    α, as a longer or shorter vocal tract would; band m takes the value the unwarped spectrum
    has at its centre frequency / α, interpolated between bands (the band edges clamp)."""
    b, _, mels = feats.shape
    log_alpha = torch.empty(b, dtype=torch.float64)
    alpha = log_alpha.uniform_(math.log(low), math.log(high), generator=gen).exp()
    top = float(hz_to_mel(torch.tensor(SAMPLE_RATE / 2.0, dtype=torch.float64)))
    step = top / (mels + 1)
    centres = mel_to_hz(torch.arange(1, mels + 1, dtype=torch.float64) * step)  # Hz
    source = hz_to_mel(centres[None, :] / alpha[:, None]) / step - 1  # (B, mels), in bands
    source = source.clamp(0, mels - 1).float()
    below = source.floor().long()
    above = (below + 1).clamp(max=mels - 1)
    w = (source - below)[:, None, :]
    index = lambda i: i[:, None, :].expand(-1, feats.shape[1], -1)  # noqa: E731
    return feats.gather(2, index(below)) * (1 - w) + feats.gather(2, index(above)) * w
