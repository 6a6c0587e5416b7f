"""The speech sets (issue 23): speaker-disjoint splits, deterministic synthesis, the noise at
the SNR asked, a missing synthesizer, and a CTC run that resumes bit-identically."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_synthesizers

from neuralab.data import speech
from neuralab.errors import UserError


def test_splits_are_speaker_disjoint():
    """No speaker (a person, or an espeak-ng accent) is in two of train, val and test, even
    through another engine (Kal is flite kal, kal16 and festival's kal_diphone); test_seen
    is spoken by the training voices; the test set has a voice of each engine."""
    speakers = {
        split: {speech.VOICES[i].speaker for i in speech.voices_of(split)}
        for split in ("train", "val", "test")
    }
    assert not speakers["train"] & speakers["val"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["val"] & speakers["test"]
    assert speech.voices_of("test_seen") == speech.voices_of("train")
    engines = {speech.VOICES[i].engine for i in speech.voices_of("test")}
    assert engines == {"espeak-ng", "flite", "festival"}
    with pytest.raises(UserError, match="splits"):
        speech.voices_of("dev")


def test_noise_is_mixed_at_the_snr_asked():
    """The added noise's power is the clean signal's over 10^(SNR/10), for each kind."""
    rng = np.random.default_rng(0)
    clean = np.sin(np.linspace(0, 300, 8000)).astype(np.float32)
    others = [rng.standard_normal(5000).astype(np.float32) for _ in range(3)]
    for kind in range(len(speech.NOISES)):
        noisy = speech.mix(clean, kind, 10.0, others, np.random.default_rng(1))
        snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
        assert abs(snr - 10.0) < 0.01, speech.NOISES[kind]


def test_transcripts_are_drawn_from_the_vocabulary():
    rng = np.random.default_rng(0)
    digits = speech.draw_texts("spoken-digits", 200, rng)
    assert {len(t.split()) for t in digits} == set(range(1, speech.MAX_DIGITS + 1))
    assert {w for t in digits for w in t.split()} == set(speech.DIGITS)
    commands = speech.draw_texts("spoken-commands", 300, rng)
    assert set(commands) <= set(speech.COMMANDS)
    with pytest.raises(UserError, match="speech sets are"):
        speech.vocabulary("spoken-letters")


def test_a_missing_synthesizer_names_its_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UserError, match="apt-get install espeak-ng") as err:
        speech.speech_set("spoken-digits", "train", 4)
    assert "\n" not in str(err.value)


def test_a_missing_festival_voice_names_its_package(monkeypatch, tmp_path):
    require_synthesizers()
    monkeypatch.setattr(speech, "FESTIVAL_VOICES", tmp_path)
    with pytest.raises(UserError, match="ked_diphone is not installed.*festvox-kdlpc16k"):
        speech.synthesizer_versions()


@pytest.mark.data
def test_a_set_is_synthesized_by_its_split_voices_deterministically_and_cached(tmp_path):
    """Every utterance is spoken by one of its split's voices, at 16 kHz, the same from the
    same seed whether built again or read from the cache, and another seed differs."""
    require_synthesizers()
    found, path = speech.speech_set("spoken-digits", "test", 6, data_dir=tmp_path)
    assert path.is_file() and len(found) == 6
    assert set(found.voices.tolist()) <= set(speech.voices_of("test"))
    assert all(0.2 < len(found.waveform(i)) / 16000 < 6 for i in range(6))
    cached, _ = speech.speech_set("spoken-digits", "test", 6, data_dir=tmp_path)
    again = speech.generate("spoken-digits", "test", 6, 0, workers=2)
    assert np.array_equal(cached.audio, found.audio) and np.array_equal(again.audio, found.audio)
    other = speech.generate("spoken-digits", "test", 6, 1, workers=1)
    assert not np.array_equal(other.texts, found.texts)


@pytest.mark.data
def test_the_recorded_voices_speak_at_the_pitch_drawn(tmp_path):
    """flite's awb and festival's Ked diphones asked for 1.8 times their own mean F0 speak
    about that much higher, measured by librosa's pYIN (an independent pitch tracker); the
    test split's recorded voices are never shifted."""
    librosa = pytest.importorskip("librosa")
    require_synthesizers()
    voices = {v.name: v for v in speech.VOICES}

    def median_f0(voice: str, f0: float) -> float:
        job = speech.Job("one two three four", voices[voice], 1.0, 50, f0, "m1",
                         tmp_path / f"{voice}-{f0}.wav")  # fmt: skip
        audio = speech.synthesize([job], workers=1)[0]
        track = librosa.pyin(audio, fmin=60, fmax=400, sr=16000)[0]
        return float(np.nanmedian(track))

    for voice in ("awb", "ked_diphone"):
        ratio = median_f0(voice, 1.8) / median_f0(voice, 1.0)
        assert 1.5 < ratio < 2.1, (voice, ratio)
    rng = np.random.default_rng(0)
    assert np.all(speech.f0_factors("test", 50, rng) == 1)
    drawn = speech.f0_factors("train", 500, rng)
    assert speech.F0_RANGE[0] <= drawn.min() < 0.9 and 1.9 < drawn.max() <= speech.F0_RANGE[1]


@pytest.mark.data
@pytest.mark.slow
def test_a_ctc_run_resumes_bit_identically(tmp_path, monkeypatch):
    """The LSTM on 24 utterances, 6 steps straight or stopped at 3 and resumed: the same
    weights and logs (SpecAugment and the bucketed order are drawn from seed and step)."""
    from test_train import straight_and_resumed

    from neuralab import config

    require_synthesizers()
    monkeypatch.setenv("NEURALAB_CACHE", str(tmp_path / "cache"))
    cfg = config.load(
        "digits_ctc_lstm",
        ["data.utterances_train=24", "data.utterances_val=4", "data.utterances_test=4",
         "model.hidden=16", "model.layers=1", "model.channels=4", "train.batch_size=4",
         "train.max_steps=6", "train.val_every=3", "train.log_every=1"],
    )  # fmt: skip
    straight_and_resumed(tmp_path, cfg, stop_at=3)
