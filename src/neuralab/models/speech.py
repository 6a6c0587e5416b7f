"""Acoustic models for CTC (Graves et al. 2006): log-mel frames in, per-frame scores of the
labels and the blank out.

Both share a front-end of two 3×3 convolutions with stride 2 in frequency and ``time_stride``
(2 or 4) in time overall, as in Deep Speech 2 (Amodei et al. 2016): a 10 ms frame rate
becomes 20 or 40 ms, which shortens the sequence the recurrent or attention layers read. Each
utterance's own mean of each mel band over its frames is subtracted (``utterance_norm``:
cepstral mean normalisation, which removes a voice's or a channel's constant spectral
tilt), then the features are normalised per mel band by the training set's mean and std
(``mean``, ``std``, of features so treated), and frames past an utterance's length are
zeroed, so padding carries nothing.

- ``ctc_lstm``: a bidirectional LSTM (torch's fused one) over packed sequences, so the
  backward direction starts at each utterance's own last frame, not in its padding.
- ``ctc_transformer``: pre-LN Transformer blocks (``models/attention.py``) with sinusoidal
  positions, padding masked out of the keys.

``forward(feats, lengths)`` takes (B, T, mels) features and (B,) frame counts and returns
(B, T', labels + 1) logits, index 0 the blank, and the (B,) output lengths T'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from neuralab.models.attention import Block
from neuralab.models.base import check, register_model
from neuralab.models.seq2seq_transformer import sinusoids

ARCHS = ("lstm", "transformer")


@dataclass(frozen=True)
class SpeechConfig:
    mels: int = 40
    vocab_size: int = 11  # the labels and the blank (index 0)
    arch: str = "lstm"
    channels: int = 32  # the front-end's convolutions
    time_stride: int = 4  # 2 or 4: frames per output step
    hidden: int = 128  # lstm: each direction's state
    layers: int = 2  # lstm
    d_model: int = 144  # transformer
    n_layers: int = 4  # transformer
    n_heads: int = 4  # transformer
    mlp_ratio: int = 4  # transformer
    dropout: float = 0.1
    # subtract each utterance's own mean of each mel band first (cepstral mean normalisation:
    # a voice's or channel's constant spectral tilt is removed)
    utterance_norm: bool = True
    mean: tuple[float, ...] = ()  # per mel band, of the training features; () = 0
    std: tuple[float, ...] = ()  # () = 1

    def __post_init__(self) -> None:
        check(self.arch in ARCHS, f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        check(self.time_stride in (2, 4), f"time_stride must be 2 or 4, got {self.time_stride}")
        check(self.vocab_size >= 2, f"vocab_size must be >= 2, got {self.vocab_size}")
        for key in ("mels", "channels", "hidden", "layers", "d_model", "n_layers", "mlp_ratio"):
            check(getattr(self, key) >= 1, f"{key} must be >= 1, got {getattr(self, key)}")
        check(
            self.n_heads >= 1 and self.d_model % self.n_heads == 0,
            f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}",
        )
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        for key in ("mean", "std"):
            n = len(getattr(self, key))
            check(n in (0, self.mels), f"{key} must have {self.mels} values (one per mel), got {n}")


def conv_length(lengths: Tensor) -> Tensor:
    """Output frames of a 3-wide, stride-2, padding-1 convolution over ``lengths`` frames."""
    return (lengths - 1) // 2 + 1


def utterance_mean(feats: Tensor, lengths: Tensor) -> Tensor:
    """(B, 1, F): each utterance's mean of each band over its own ``lengths`` frames."""
    keep = (torch.arange(feats.shape[1], device=feats.device) < lengths[:, None])[..., None]
    return (feats * keep).sum(1, keepdim=True) / lengths.clamp(min=1)[:, None, None]


class CTCModel(nn.Module):
    """The front-end and output layer; subclasses define ``encode``."""

    Config: ClassVar[type[SpeechConfig]] = SpeechConfig
    kind: ClassVar[str] = "speech"

    def __init__(self, config: SpeechConfig) -> None:
        super().__init__()
        c = self.config = config
        self.register_buffer("mean", torch.tensor(c.mean or [0.0] * c.mels))
        self.register_buffer("std", torch.tensor(c.std or [1.0] * c.mels))
        second = (c.time_stride // 2, 2)
        self.front = nn.ModuleList(
            [
                nn.Conv2d(1, c.channels, 3, stride=2, padding=1),
                nn.Conv2d(c.channels, c.channels, 3, stride=second, padding=1),
            ]
        )
        self.freq_out = conv_length(conv_length(torch.tensor(c.mels))).item()
        self.drop = nn.Dropout(c.dropout)

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def out_lengths(self, lengths: Tensor) -> Tensor:
        """How many output steps ``lengths`` input frames give."""
        out = conv_length(lengths)
        return conv_length(out) if self.config.time_stride == 4 else out

    def features(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T', channels · mels') front-end output and its lengths; each convolution's
        output past an utterance's own length is zeroed, so a padded utterance is scored as
        it would be alone."""
        check(
            feats.dim() == 3 and feats.shape[2] == self.config.mels,
            f"expected (B, T, {self.config.mels}) log-mel features, got {tuple(feats.shape)}",
        )
        if self.config.utterance_norm:
            feats = feats - utterance_mean(feats, lengths)
        x = ((feats - self.mean) / self.std).unsqueeze(1)  # (B, 1, T, F)
        for i, conv in enumerate(self.front):
            if i:
                x = torch.relu(conv(x))
                lengths = conv_length(lengths) if self.config.time_stride == 4 else lengths
            else:
                x, lengths = torch.relu(conv(x * self._keep(x, lengths))), conv_length(lengths)
            x = x * self._keep(x, lengths)
        return x.permute(0, 2, 1, 3).flatten(2), lengths  # (B, T', C · F')

    @staticmethod
    def _keep(x: Tensor, lengths: Tensor) -> Tensor:
        """(B, 1, T, 1): whether each step of (B, C, T, F) ``x`` is within its length."""
        steps = torch.arange(x.shape[2], device=x.device)
        return (steps < lengths[:, None])[:, None, :, None]

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, out_lengths = self.features(feats, lengths)
        return self.encode(self.drop(x), out_lengths), out_lengths

    def encode(self, x: Tensor, lengths: Tensor) -> Tensor:
        raise NotImplementedError


@register_model("ctc_lstm", arch="lstm")
class CTCLSTM(CTCModel):
    """The conv front-end, then a bidirectional LSTM over packed sequences."""

    def __init__(self, config: SpeechConfig) -> None:
        super().__init__(config)
        c = config
        self.lstm = nn.LSTM(
            c.channels * self.freq_out,
            c.hidden,
            c.layers,
            batch_first=True,
            bidirectional=True,
            dropout=c.dropout if c.layers > 1 else 0.0,
        )
        self.head = nn.Linear(2 * c.hidden, c.vocab_size)

    def encode(self, x: Tensor, lengths: Tensor) -> Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return self.head(self.drop(out))


@register_model("ctc_transformer", arch="transformer")
class CTCTransformer(CTCModel):
    """The conv front-end, then bidirectional Transformer blocks over the unpadded steps."""

    def __init__(self, config: SpeechConfig) -> None:
        super().__init__(config)
        c = config
        self.proj = nn.Linear(c.channels * self.freq_out, c.d_model)
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.n_heads, causal=False, dropout=c.dropout, mlp_ratio=c.mlp_ratio)
            for _ in range(c.n_layers)
        )
        self.ln = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size)

    def encode(self, x: Tensor, lengths: Tensor) -> Tensor:
        T = x.shape[1]
        keep = torch.arange(T, device=x.device) < lengths[:, None]
        x = self.drop(self.proj(x) + sinusoids(T, self.config.d_model).to(x))
        for block in self.blocks:
            x = block(x, keep=keep)
        return self.head(self.ln(x))
