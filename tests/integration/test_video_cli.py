"""Video classification (issue 21) end to end through the CLI on tiny clip sets drawn from
the real Fashion-MNIST: train, test, predict a clip file, data info and show, and the
mistakes a user can make."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require_dataset
from PIL import Image
from test_cli import assert_user_error, neuralab

pytestmark = pytest.mark.data
SMALL = [
    "data.clips_train=40",
    "data.clips_test=12",
    "data.clip_size=24",
    "data.frames=8",
    "data.video_frames=10",
    "data.videos_test=5",
    "model.widths=4,8,8",
    "model.hidden=16",
    "train.batch_size=8",
    "train.max_steps=4",
]


def test_slow_fusion_trains_tests_and_predicts_a_clip(tmp_path):
    """`neuralab train moving_fashion_slow` (shortened) prints test/acc beside chance and the
    video accuracy, which results.json and `neuralab test --json` hold too; predict reads a
    clip from .npy and from an animated GIF and names its classes; probe saliency says how
    much each frame of a test clip counted; a clip of the wrong length, or test videos
    shorter than a clip, is a one-line error."""
    require_dataset("fashion-mnist")
    out = neuralab("train", "moving_fashion_slow", *SMALL, "--run-dir", "v", "--json",
                   cwd=tmp_path).stdout  # fmt: skip
    result = json.loads(out)
    assert 0 <= result["test/acc"] <= 1 and result["test/chance"] == 0.1
    assert result["test/examples"] == 12 and "train/wall_s" in result
    assert result["test/videos"] == 5 and result["test/clips_per_video"] == 3
    assert 0 <= result["test/video_acc"] <= 1
    again = json.loads(neuralab("test", "v", "--json", cwd=tmp_path).stdout)
    assert again["test/acc"] == result["test/acc"]
    assert "clips (chance 0.100)" in neuralab("test", "v", cwd=tmp_path).stdout

    clip = np.random.default_rng(0).integers(0, 256, (8, 24, 24), dtype=np.uint8)
    np.save(tmp_path / "clip.npy", clip)
    frames = [Image.fromarray(f) for f in clip]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:])
    found = json.loads(
        neuralab(
            "predict", "v", "clip.npy", "clip.gif", "--top-k", "3", "--json", cwd=tmp_path
        ).stdout  # fmt: skip
    )
    first, second = found["predictions"]
    assert len(first["top"]) == 3 and first["top"] == second["top"]
    assert first["top"][0]["class"] in ("left", "right", "up", "down", "clockwise",
                                        "anticlockwise", "grow", "shrink", "up-right",
                                        "down-left")  # fmt: skip
    np.save(tmp_path / "short.npy", clip[:5])
    proc = neuralab("predict", "v", "short.npy", cwd=tmp_path, check=False)
    assert_user_error(proc, "holds a clip of shape (5, 24, 24)")
    probe = json.loads(
        neuralab(
            "probe", "saliency", "v", "--index", "0,1", "--method", "grad", "--json", cwd=tmp_path
        ).stdout  # fmt: skip
    )
    assert len(probe["frame_share"]) == 2 and len(probe["frame_share"][0]) == 8
    assert abs(sum(probe["frame_share"][0]) - 1) < 1e-3 and (tmp_path / probe["png"]).exists()
    proc = neuralab("train", "moving_fashion_slow", *SMALL, "data.video_frames=6",
                    cwd=tmp_path, check=False)  # fmt: skip
    assert_user_error(proc, "data.video_frames (6) must be at least data.frames (8)")


def test_data_info_and_show_of_the_clips(tmp_path):
    """`data info` counts the clips per class and split; `data show` writes the frame
    strips, or a GIF of the clips playing; a captioned-only split is refused."""
    require_dataset("fashion-mnist")
    sizes = ["--size", "24", "--train", "30", "--test", "10"]
    info = json.loads(
        neuralab(
            "data",
            "info",
            "moving-fashion",
            *sizes,
            "--variant",
            "appearance",
            "--json",
            cwd=tmp_path,
        ).stdout  # fmt: skip
    )
    assert info["variant"] == "appearance" and info["chance"] == 0.1
    assert sum(info["splits"]["test"]["clips_per_class"].values()) == 10
    assert info["splits"]["train"]["items_per_clip"] == {"1": 27, "2": 0}  # val has 3
    out = neuralab("data", "show", "moving-fashion", *sizes, "--n", "3", "--out", "s.png",
                   cwd=tmp_path).stdout  # fmt: skip
    assert "3 test clips (motion)" in out and (tmp_path / "s.png").stat().st_size > 0
    out = neuralab("data", "show", "moving-fashion", *sizes, "--n", "5", "--out", "s.gif",
                   cwd=tmp_path).stdout  # fmt: skip
    with Image.open(tmp_path / "s.gif") as gif:
        assert gif.n_frames == 16 and gif.size == (4 * 24 + 3 * 2, 2 * 24 + 2)
    assert len(out.splitlines()[-1].split(", ")) == 5
    proc = neuralab("data", "show", "moving-fashion", *sizes, "--split", "test_comp",
                    cwd=tmp_path, check=False)  # fmt: skip
    assert_user_error(proc, "clip sets have the splits train, val, test")
