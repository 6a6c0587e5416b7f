"""Text classification (issue 22) end to end through the CLI on the real World English
Bible (Debian's sword-text-web): train a shortened preset, test, predict texts, and the
mistakes a user can make."""

from __future__ import annotations

import json

import pytest
from conftest import require_dataset
from test_cli import assert_user_error, neuralab

pytestmark = pytest.mark.data
SMALL = ["data.vocab_size=300", "data.max_tokens=16", "train.batch_size=32", "train.max_steps=5"]


@pytest.mark.parametrize("arch", ["cnn", "transformer"])
def test_a_genre_classifier_trains_tests_and_predicts(tmp_path, arch):
    """`neuralab train bible_genre_*` (shortened) prints accuracy, macro-F1 and the majority
    class; the run keeps its tokenizer; predict --text names a genre, warns when it cuts
    a long text, and refuses an empty one or an image."""
    require_dataset("bible-genre")
    result = json.loads(
        neuralab(
            "train",
            f"bible_genre_{arch}",
            *SMALL,
            "model.d_embed=32",
            "--run-dir",
            "r",
            "--json",
            cwd=tmp_path,
        ).stdout  # fmt: skip
    )
    assert 0 <= result["test/acc"] <= 1 and 0 <= result["test/macro_f1"] <= 1
    assert 0.2 < result["test/majority"] < 0.3 and result["test/examples"] > 2000
    assert (tmp_path / "r" / "tokenizer.json").is_file()
    text = "And Jesus said to his disciples, follow me. " * 3
    proc = neuralab("predict", "r", "--text", text, "--text", "Woe to you, O Nineveh",
                    "--top-k", "2", "--json", cwd=tmp_path)  # fmt: skip
    first, second = json.loads(proc.stdout)["predictions"]
    assert len(first["top"]) == 2 and first["tokens"] == 16 and second["tokens"] < 16
    assert "cut to its first 16 tokens" in proc.stderr
    assert_user_error(neuralab("predict", "r", "--text", " ", cwd=tmp_path, check=False),
                      "a --text is empty")  # fmt: skip
    assert_user_error(neuralab("predict", "r", "x.png", cwd=tmp_path, check=False),
                      "classifies texts: pass them with --text")  # fmt: skip


def test_fortunes_info_and_a_short_run(tmp_path):
    """`data info fortunes` counts the 32 categories' 14,691 fortunes by split; the CNN
    preset trains a few steps on them and reports macro-F1 beside the majority class."""
    require_dataset("fortunes")
    info = json.loads(neuralab("data", "info", "fortunes", "--json", cwd=tmp_path).stdout)
    assert info["classes"] == 32
    assert sum(s["texts"] for s in info["splits"].values()) == 14691
    assert info["splits"]["test"]["majority"] < 0.1
    result = json.loads(
        neuralab(
            "train",
            "fortunes_cnn",
            *SMALL,
            "model.filters=8",
            "--run-dir",
            "f",
            "--json",
            cwd=tmp_path,
        ).stdout  # fmt: skip
    )
    assert result["test/examples"] == info["splits"]["test"]["texts"]
    assert 0 <= result["test/macro_f1"] <= 1


def test_a_text_classifier_on_images_is_refused(tmp_path):
    proc = neuralab("train", "bible_genre_cnn", "data.name=digits", cwd=tmp_path, check=False)
    assert_user_error(proc, "text classification needs labelled texts")
