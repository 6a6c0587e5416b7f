"""Captioning (issue 20) end to end through the CLI on tiny captioned scene sets drawn from
the real Fashion-MNIST: train, test, predict, probe attention, data show, and the mistakes a
user can make."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require_dataset
from PIL import Image
from test_cli import assert_user_error, neuralab

pytestmark = pytest.mark.data
SMALL = [
    "data.scenes_train=64",
    "data.scenes_test=12",
    "model.widths=8,8,16",
    "model.embed=16",
    "model.hidden=32",
    "model.attention=16",
    "train.batch_size=16",
    "train.max_steps=6",
    "train.val_every=3",
]
KEYS = ("bleu4", "cider", "fact_f1")


def test_attention_preset_trains_tests_captions_and_draws_attention(tmp_path):
    """`neuralab train scenes_caption_attention` (shortened) prints the contract's keys,
    which results.json and `neuralab test --json` hold too; predict prints a caption of an
    image file of any size (greedy, beam, sampled), probe attention draws the picture."""
    require_dataset("fashion-mnist")
    out = neuralab("train", "scenes_caption_attention", *SMALL, "--run-dir", "c", "--json",
                   cwd=tmp_path).stdout  # fmt: skip
    result = json.loads(out)
    for key in [f"test/{k}" for k in KEYS] + ["test_comp/bleu4", "test_comp/fact_f1"]:
        assert 0 <= result[key] <= (10 if "cider" in key else 1), key
    assert result["test/examples"] == 12 and result["test_comp/examples"] == 12
    assert "train/wall_s" in result and "nrefs:5" in result["test/bleu_signature"]
    saved = json.loads((tmp_path / "c/results.json").read_text())
    again = json.loads(neuralab("test", "c", "--json", cwd=tmp_path).stdout)
    assert saved["test/fact_f1"] == result["test/fact_f1"] == again["test/fact_f1"]
    printed = neuralab("test", "c", cwd=tmp_path).stdout
    assert "compositional (12)" in printed and "beam3" in printed
    examples = json.loads((tmp_path / "c/test_captions.json").read_text())
    assert len(examples["test_comp"][0]["references"]) == 5

    Image.fromarray(np.full((50, 70, 3), 90, np.uint8)).save(tmp_path / "x.png")
    greedy = neuralab("predict", "c", "x.png", cwd=tmp_path).stdout.strip()
    beam = json.loads(
        neuralab("predict", "c", "x.png", "--beam", "3", "--json", cwd=tmp_path).stdout
    )
    assert set(beam) == {"image", "caption"} and isinstance(beam["caption"], str)
    assert "\n" not in greedy
    sampled = [
        neuralab("predict", "c", "x.png", "--temperature", "1", "--seed", "3", cwd=tmp_path).stdout
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]  # same seed, same caption
    probe = neuralab("probe", "attention", "c", "x.png", "--out", "a.png", "--json", cwd=tmp_path)
    assert json.loads(probe.stdout)["png"] == "a.png"
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"

    cases = [
        (["predict", "c", "x.png", "--beam", "0"], "--beam must be >= 1"),
        (["probe", "attention", "c"], "a caption run needs an image"),
        (["train", "scenes_caption_attention", "data.name=fashion-scenes"], "captioning needs"),
        (["train", "scenes_caption_attention", "model.name=resnet20"], "cannot learn from"),
        (["train", "fashion_cnn", "model.name=caption_lstm"], "cannot learn from"),
    ]
    for argv, words in cases:
        assert_user_error(neuralab(*argv, cwd=tmp_path, check=False), words)


def test_lstm_preset_has_no_attention_picture_and_data_show_draws_captions(tmp_path):
    require_dataset("fashion-mnist")
    neuralab("train", "scenes_caption_lstm", *SMALL, "--run-dir", "l", cwd=tmp_path)
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "x.png")
    assert_user_error(
        neuralab("probe", "attention", "l", "x.png", cwd=tmp_path, check=False), "does not attend"
    )
    assert_user_error(
        neuralab("predict", "l", "x.png", "--temperature", "-1", cwd=tmp_path, check=False),
        "--temperature must be >= 0",
    )
    show = ["data", "show", "fashion-scenes-captions", "--train", "64", "--test", "12"]
    out = neuralab(*show, "--n", "4", "--split", "test_comp", "--out", "s.png", cwd=tmp_path)
    assert "4 test_comp scenes" in out.stdout
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
