"""WAV files in and out for speech runs, in NumPy (no torch: ``data list`` stays light).

Everything a speech model hears is mono 16 kHz (``SAMPLE_RATE``). ``read_wav`` converts what
it can and says so: several channels are averaged, another sample rate is resampled with a
polyphase filter (``scipy.signal.resample_poly``); 8 kHz audio is converted too, but it has
nothing above 4 kHz, which the models heard in training (its notes say this). A file that is
not a PCM WAV, or holds no samples, is a one-line error.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np

from neuralab.errors import UserError

SAMPLE_RATE = 16_000


def resample(audio: np.ndarray, rate: int, to: int = SAMPLE_RATE) -> np.ndarray:
    """``audio`` (float) at ``rate`` Hz resampled to ``to`` Hz by a polyphase filter."""
    if rate == to:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(rate, to)
    return resample_poly(audio, to // g, rate // g).astype(np.float32)


def read_wav(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(mono float32 samples in [-1, 1] at ``SAMPLE_RATE``, notes on what was converted) of a
    PCM WAV file; a one-line error for anything else or an empty file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            raw = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as err:
        raise UserError(f"{path} is not a PCM WAV file ({err})") from None
    if width not in (1, 2, 4):
        raise UserError(f"{path}: {8 * width}-bit samples are not supported (8, 16 or 32)")
    samples = np.frombuffer(
        raw[: len(raw) - len(raw) % (width * channels)], {1: np.uint8, 2: "<i2", 4: "<i4"}[width]
    )
    if samples.size == 0:
        raise UserError(f"{path} holds no audio (0 samples)")
    audio = samples.astype(np.float32)
    audio = (audio - 128) / 128 if width == 1 else audio / float(2 ** (8 * width - 1))
    notes = []
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(1)
        notes.append(f"{channels} channels averaged to mono")
    if rate != SAMPLE_RATE:
        audio = resample(audio, rate)
        notes.append(f"resampled from {rate} Hz to {SAMPLE_RATE} Hz")
        if rate < SAMPLE_RATE:
            notes.append(f"it has nothing above {rate // 2} Hz, which the model heard in training")
    return audio, notes


def write_wav(path: str | Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Mono 16-bit PCM WAV of float samples (clipped to [-1, 1])."""
    path = Path(path)
    pcm = (np.clip(audio, -1, 1) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return path
