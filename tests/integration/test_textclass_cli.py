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
    proc = neuralab("predict", "r", "--text", text, "--text", "Woe to you",
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


def test_a_gpt_classifier_starts_from_its_language_model(tmp_path):
    """`bible_genre_lm` (shortened) learns a BPE language model of the train and val verses,
    its tokenizer holding the classifier's <pad> and <cls>; `bible_genre_gpt
    train.init_from=` that run reads the same tokenizer and starts from all its tensors.
    Another width, or a directory that is no run, is one line (exit 2), the latter before
    any run directory exists."""
    require_dataset("bible-genre")
    tiny = ["model.n_layer=1", "model.n_heads=2", "model.d_model=16", "data.vocab_size=300"]
    neuralab("train", "bible_genre_lm", *tiny, "train.max_steps=3", "train.val_every=3",
             "--run-dir", "lm", cwd=tmp_path)  # fmt: skip
    result = json.loads(
        neuralab(
            "train",
            "bible_genre_gpt",
            *tiny,
            "data.max_tokens=16",
            "train.max_steps=2",
            "train.batch_size=8",
            "train.init_from=lm",
            "--run-dir",
            "clf",
            "--json",
            cwd=tmp_path,
        ).stdout  # fmt: skip
    )
    assert 0 <= result["test/macro_f1"] <= 1
    lm_tokenizer = (tmp_path / "lm" / "tokenizer.json").read_bytes()
    assert (tmp_path / "clf" / "tokenizer.json").read_bytes() == lm_tokenizer
    assert json.loads(lm_tokenizer)["special"].keys() >= {"<pad>", "<cls>"}
    summary = json.loads((tmp_path / "clf" / "results.json").read_text())
    assert summary["train/init_tensors"] == 9  # wte, one block's 6 (no biases), ln_f, head (tied)
    proc = neuralab("train", "bible_genre_gpt", *tiny, "model.d_model=32", "train.init_from=lm",
                    "--run-dir", "wide", cwd=tmp_path, check=False)  # fmt: skip
    assert_user_error(proc, "train.init_from=lm: its gpt differs from this text_gpt "
                      "(d_model=16 there, 32 here)")  # fmt: skip
    assert not (tmp_path / "wide").exists()
    proc = neuralab("train", "bible_genre_gpt", "train.init_from=nowhere", "--run-dir", "none",
                    cwd=tmp_path, check=False)  # fmt: skip
    assert_user_error(proc, "no 'best' checkpoint in nowhere")
    assert not (tmp_path / "none").exists()
