"""Speech recognition (issue 23) end to end through the CLI on tiny synthesized sets:
train, test, predict a WAV, data info, show and make, and the mistakes a user can make."""

from __future__ import annotations

import json
import os
import sys
import wave

import numpy as np
import pytest
from conftest import require_synthesizers
from test_cli import assert_user_error, neuralab

pytestmark = pytest.mark.data
SMALL = [
    "data.utterances_train=32",
    "data.utterances_val=6",
    "data.utterances_test=6",
    "model.hidden=16",
    "model.layers=1",
    "model.channels=4",
    "train.batch_size=8",
    "train.max_steps=4",
]


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    """One working directory (and speech cache) shared by this module's tests."""
    require_synthesizers()
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="module")
def run(cwd):
    """A shortened digits_ctc_lstm run, trained and tested: (run dir name, its results)."""
    out = neuralab("train", "digits_ctc_lstm", *SMALL, "--run-dir", "s", "--json", cwd=cwd)
    return "s", json.loads(out.stdout)


def test_a_ctc_run_reports_wer_on_unseen_and_seen_voices(cwd, run):
    """`train --json` prints test/wer and test/cer (unseen voices) and test_seen/wer and
    test_seen/cer, which results.json holds with train/wall_s; `test` prints the table."""
    name, result = run
    for key in ("test/wer", "test/cer", "test_seen/wer", "test_seen/cer", "test/greedy_wer"):
        assert 0 <= result[key], key
    assert result["test/examples"] == 6 and result["test/beam"] == 8
    assert set(result["test/wer_by_voice"]) <= {
        "espeak-ng:en-gb-x-gbcwmd", "flite:slt", "festival:cmu_us_slt_arctic_hts"
    }  # fmt: skip
    saved = json.loads((cwd / name / "results.json").read_text())
    assert saved["test/wer"] == result["test/wer"] and "train/wall_s" in saved
    assert (cwd / name / "test_transcripts.json").is_file()
    shown = neuralab("test", name, cwd=cwd).stdout
    assert "unseen voices, beam 8" in shown and "seen voices" in shown and "WER" in shown


def test_predict_prints_the_transcript_of_a_wav(cwd, run):
    """A WAV written by `data show` is transcribed on one line of stdout (words of the
    vocabulary only); a stereo 8 kHz copy is converted, saying so on stderr."""
    name, _ = run
    shown = neuralab(
        "data", "show", "spoken-digits", "--train", "32", "--test", "6", "--n", "2",
        "--out", "utt.png", cwd=cwd,
    ).stdout  # fmt: skip
    assert "utt.wav" in shown and (cwd / "utt.png").is_file()
    out = neuralab("predict", name, "utt.wav", cwd=cwd)
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    digits = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert set(lines[0].split()) <= digits
    with wave.open(str(cwd / "utt.wav")) as f:
        mono = np.frombuffer(f.readframes(f.getnframes()), "<i2")
    with wave.open(str(cwd / "stereo.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(np.repeat(mono[::2, None], 2, 1).astype("<i2").tobytes())
    out = neuralab("predict", name, "stereo.wav", "utt.wav", "--beam", "1", "--json", cwd=cwd)
    found = json.loads(out.stdout)["predictions"]
    assert [p["file"] for p in found] == ["stereo.wav", "utt.wav"]
    assert "averaged to mono" in out.stderr and "resampled from 8000 Hz" in out.stderr


def test_data_info_and_make_list_the_voices_of_each_split(cwd):
    info = json.loads(
        neuralab(
            "data", "info", "spoken-commands", "--train", "8", "--test", "4", "--json", cwd=cwd
        ).stdout  # fmt: skip
    )
    assert "flite:slt" in info["test"]["voices"] and "flite:slt" not in info["train"]["voices"]
    assert info["val"]["utterances"] == 4 and sum(info["train"]["snr_db"].values()) == 8
    assert set(info["train"]["noise"]) == {"white", "pink", "babble"}
    made = neuralab("data", "make", "spoken-commands", "--train", "8", "--test", "4", cwd=cwd)
    assert made.stdout.count("utterances") == 4


def test_speech_mistakes_are_one_line_errors(cwd, run, monkeypatch):
    """A file that is not a WAV, an empty WAV, no file, a model or data of another kind, and
    missing synthesizers: each one line on stderr and exit status 2, and no run directory."""
    name, _ = run
    (cwd / "notes.wav").write_text("this is not audio")
    assert_user_error(neuralab("predict", name, "notes.wav", cwd=cwd, check=False), "not a PCM WAV")
    with wave.open(str(cwd / "empty.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
    assert_user_error(neuralab("predict", name, "empty.wav", cwd=cwd, check=False), "no audio")
    assert_user_error(neuralab("predict", name, cwd=cwd, check=False), "give the WAV files")
    assert_user_error(
        neuralab("train", "digits_cnn", "model.name=ctc_lstm", cwd=cwd, check=False),
        "'ctc_lstm' cannot learn from images",
    )
    assert_user_error(
        neuralab("train", "digits_ctc_lstm", "data.name=digits", cwd=cwd, check=False),
        "speech recognition needs a speech set",
    )
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    proc = neuralab("train", "digits_ctc_lstm", *SMALL, "--run-dir", "x", cwd=cwd, check=False)
    assert_user_error(proc, "apt-get install espeak-ng")
    assert not (cwd / "x").exists()
