"""Audio in and out (issue 23): WAV conversion and its one-line errors, the log-mel features
against librosa, and SpecAugment."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from neuralab.data import audio, wav
from neuralab.errors import UserError


def tone(seconds: float = 0.5, rate: int = wav.SAMPLE_RATE, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write_raw(path, samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())


def test_log_mel_matches_librosa():
    """The torch features equal librosa's melspectrogram (Slaney mels, centred frames,
    zero padding) then log: max abs difference below 1e-3 on noisy speech-like audio
    (measured: about 4e-5), and the filterbank equals librosa.filters.mel to 1e-6."""
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    y = (tone(1.0, hz=300) + 0.1 * rng.standard_normal(wav.SAMPLE_RATE)).astype(np.float32)
    for mels in (40, 80):
        ours = audio.log_mel(torch.from_numpy(y), mels).numpy()
        ref = librosa.feature.melspectrogram(
            y=y, sr=16000, n_fft=400, hop_length=160, n_mels=mels, pad_mode="constant"
        )
        assert ours.shape == (audio.frames_of(len(y)), mels) == ref.T.shape
        assert np.abs(ours - np.log(ref.T + audio.EPS)).max() < 1e-3
        bank = librosa.filters.mel(sr=16000, n_fft=400, n_mels=mels)
        assert np.abs(audio.mel_filterbank(mels).numpy() - bank).max() < 1e-6


def test_log_mel_batches_like_one_at_a_time():
    y = torch.from_numpy(np.stack([tone(0.3, hz=200), tone(0.3, hz=900)]))
    batch = audio.log_mel(y, 40)
    assert torch.allclose(batch[1], audio.log_mel(y[1], 40), atol=1e-5)


def test_wav_round_trip_and_conversions(tmp_path):
    """A 16 kHz mono file reads back as written; stereo is averaged, 8 kHz and 44.1 kHz are
    resampled (keeping the tone's pitch), and 8-bit files read too; each conversion is noted."""
    y = tone()
    back, notes = wav.read_wav(wav.write_wav(tmp_path / "a.wav", y))
    assert notes == [] and np.abs(back - y).max() < 1e-4
    stereo = np.stack([y, np.zeros_like(y)], 1)
    write_raw(tmp_path / "s.wav", (stereo * 32767).astype("<i2"), 16000, channels=2)
    mono, notes = wav.read_wav(tmp_path / "s.wav")
    assert np.abs(mono - y / 2).max() < 1e-3 and "averaged" in notes[0]
    for rate in (8000, 44100):
        write_raw(tmp_path / "r.wav", (tone(rate=rate) * 32767).astype("<i2"), rate)
        out, notes = wav.read_wav(tmp_path / "r.wav")
        assert abs(len(out) - len(y)) <= 1 and "resampled" in notes[0]
        peak = np.abs(np.fft.rfft(out)).argmax() * wav.SAMPLE_RATE / len(out)
        assert abs(peak - 440) < 5
    write_raw(tmp_path / "b.wav", (y * 127 + 128).astype(np.uint8), 16000, width=1)
    assert np.abs(wav.read_wav(tmp_path / "b.wav")[0] - y).max() < 0.02


def test_bad_audio_files_are_one_line_errors(tmp_path):
    (tmp_path / "x.wav").write_text("not audio at all")
    with pytest.raises(UserError, match="not a PCM WAV"):
        wav.read_wav(tmp_path / "x.wav")
    write_raw(tmp_path / "empty.wav", np.zeros(0, "<i2"), 16000)
    with pytest.raises(UserError, match="no audio"):
        wav.read_wav(tmp_path / "empty.wav")
    with pytest.raises(UserError, match="no such file"):
        wav.read_wav(tmp_path / "missing.wav")
    write_raw(tmp_path / "low.wav", (tone(rate=8000) * 32767).astype("<i2"), 8000)
    assert any("nothing above 4000 Hz" in n for n in wav.read_wav(tmp_path / "low.wav")[1])


def test_spec_augment_masks_inside_each_utterance_and_repeats_from_its_generator():
    feats = torch.ones(4, 50, 40)
    lengths = torch.tensor([50, 30, 10, 1])
    masked = audio.spec_augment(feats, lengths, torch.Generator().manual_seed(0))
    again = audio.spec_augment(feats, lengths, torch.Generator().manual_seed(0))
    assert torch.equal(masked, again)
    assert (masked == 0).any() and (masked == 1).any()
    # whole frames masked in time lie within the utterance's own frames
    dead_frames = (masked == 0).all(2)
    for b, n in enumerate(lengths.tolist()):
        assert not dead_frames[b, n:].any()
        assert dead_frames[b, :n].sum() <= 2 * int(0.1 * n) + 2
    # no band wider than freq_width per mask, two masks: at most 16 mels dead everywhere
    assert ((masked == 0).all(1).sum(1) <= 16).all()


def test_frequency_warping_moves_a_tone_as_a_higher_voice_would():
    """VTLP with α = 1.15 moves the log-mel peak of a 1 kHz tone to where a 1.15 kHz tone's
    peak is (within one band), α = 1 changes nothing, and α is drawn per utterance."""
    feats = torch.stack(
        [audio.log_mel(torch.from_numpy(tone(0.3, hz=hz)), 40) for hz in (1000, 1150)]
    )
    warped = audio.warp_frequency(feats[:1], torch.Generator().manual_seed(0), 1.15, 1.15)
    peak = lambda f: f.mean(0).argmax().item()  # noqa: E731
    assert abs(peak(warped[0]) - peak(feats[1])) <= 1 and peak(feats[0]) < peak(feats[1])
    same = audio.warp_frequency(feats, torch.Generator().manual_seed(0), 1.0, 1.0)
    assert torch.allclose(same, feats)
    two = audio.warp_frequency(feats[[0, 0]], torch.Generator().manual_seed(1), 0.8, 1.25)
    assert not torch.allclose(two[0], two[1])
