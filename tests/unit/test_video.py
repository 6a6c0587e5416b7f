"""The clip classifiers (issue 21): each fusion's temporal receptive field is the paper's, and
the video kind of run trains, resumes and tests on a tiny clip set."""

from __future__ import annotations

import pytest
import torch
from conftest import require_dataset

from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.models.video import FUSIONS, slow_levels

FRAMES, SIZE = 16, 32
SMALL = {"widths": (4, 8, 8), "hidden": 16, "image_size": SIZE, "frames": FRAMES}


TINY_TRANSFORMER = {"patch": 8, "d_model": 16, "n_heads": 2, "n_layers": 2, "image_size": SIZE,
                    "frames": FRAMES}  # fmt: skip


def frames_that_matter(name: str) -> set[int]:
    """The frames whose change changes the model's output: each frame in turn is replaced
    by noise, in eval mode (batch norm then acts per example)."""
    torch.manual_seed(0)
    model = create_model(name, **(TINY_TRANSFORMER if name == "video_transformer" else SMALL))
    model.eval()
    x = torch.rand(2, FRAMES, 1, SIZE, SIZE)
    with torch.no_grad():
        base = model(x)
        found = set()
        for t in range(FRAMES):
            changed = x.clone()
            changed[:, t] = torch.rand(2, 1, SIZE, SIZE)
            if not torch.allclose(model(changed), base, rtol=0, atol=1e-6):
                found.add(t)
    return found


@pytest.mark.parametrize(
    ("fusion", "expected"),
    [
        ("single", {FRAMES // 2}),
        ("late", {0, FRAMES - 1}),
        ("early", set(range(FRAMES))),
        ("slow", set(range(FRAMES))),
        ("multires", set(range(FRAMES))),
        ("lstm", set(range(FRAMES))),
        ("c3d", set(range(FRAMES))),
        ("transformer", set(range(FRAMES))),
    ],
)
def test_each_fusion_sees_the_frames_the_paper_says(fusion, expected):
    """Single-frame reads one frame, late fusion the first and the last (15 apart), early,
    slow and multiresolution fusion all 16, and so do the LSTM over per-frame features and
    C3D and the video Transformer; the model says so itself too."""
    assert frames_that_matter(f"video_{fusion}") == expected
    model = create_model(f"video_{fusion}", **(TINY_TRANSFORMER if fusion == "transformer"
                                               else SMALL))  # fmt: skip
    used = model.frames_used()
    assert (set(range(FRAMES)) if used is None else set(used)) == expected


def test_slow_fusion_grows_its_view_in_time_level_by_level():
    """The first level sees 4 frames at stride 2, the second 3 of those at stride 2 (8
    frames), the last what is left (3 more: all 16); an output of the first level changes
    only with its own 4 frames."""
    assert slow_levels(16) == [(4, 2, 0), (3, 2, 0), (3, 1, 0)]
    assert slow_levels(8) == [(4, 2, 0), (3, 2, 0), (1, 1, 0)]
    torch.manual_seed(0)
    model = create_model("video_slow", **SMALL).eval()
    first = model.tower.levels[0]
    x = torch.rand(1, 1, FRAMES, SIZE, SIZE)
    with torch.no_grad():
        base = first(x)
        changed = x.clone()
        changed[:, :, 5] += 1.0  # frame 5 is in windows 1 (frames 2–5) and 2 (4–7)
        moved = (first(changed) - base).abs().amax(dim=(0, 1, 3, 4))
    assert (moved > 0).nonzero().flatten().tolist() == [1, 2]


def test_c3d_sees_three_frames_at_its_first_level_and_the_lstm_reads_forward():
    """C3D's first level (3×3×3, padded, time stride 1): frame 5 moves outputs 4, 5 and 6
    only. The LSTM's output at step t changes with frames up to t and never after."""
    torch.manual_seed(0)
    model = create_model("video_c3d", **SMALL).eval()
    first = model.tower.levels[0]
    x = torch.rand(1, 1, FRAMES, SIZE, SIZE)
    with torch.no_grad():
        changed = x.clone()
        changed[:, :, 5] += 1.0
        moved = (first(changed) - first(x)).abs().amax(dim=(0, 1, 3, 4))
    assert (moved > 0).nonzero().flatten().tolist() == [4, 5, 6]

    model = create_model("video_lstm", **SMALL).eval()
    clip = torch.rand(1, FRAMES, 1, SIZE, SIZE)
    with torch.no_grad():
        steps = model.tower(clip[0]).unsqueeze(0)  # (1, T, features)
        later = steps.clone()
        later[:, 10] += 1.0
        moved = (model.lstm(later)[0] - model.lstm(steps)[0]).abs().amax(dim=(0, 2))
    assert (moved > 0).nonzero().flatten().tolist() == list(range(10, FRAMES))


def test_divided_attention_mixes_one_place_over_time_then_one_time_over_space():
    """TimeSformer's divided attention: after the time step, a change to the token at (time
    1, place 3) reaches only place 3's tokens (at every time); after the space step, only
    time 1's tokens (at every place). Joint attention would reach every token at once."""
    torch.manual_seed(0)
    block = create_model("video_transformer", **TINY_TRANSFORMER).blocks[0].eval()
    x = torch.randn(1, 4, 6, 16)  # (B, T, N, d)
    changed = x.clone()
    changed[0, 1, 3] += 1.0
    with torch.no_grad():
        by_time = (block.attend_time(changed) - block.attend_time(x)).abs().amax(-1)[0]
        by_space = (block.attend_space(changed) - block.attend_space(x)).abs().amax(-1)[0]
    assert by_time[:, 3].gt(0).all() and by_time[:, [0, 1, 2, 4, 5]].eq(0).all()
    assert by_space[1].gt(0).all() and by_space[[0, 2, 3]].eq(0).all()


def test_multires_streams_are_the_centre_and_the_half_resolution_frame():
    """The fovea stream sees only the centre quarter of the frame; the context the whole."""
    torch.manual_seed(0)
    model = create_model("video_multires", **SMALL).eval()
    x = torch.rand(1, FRAMES, 1, SIZE, SIZE)
    with torch.no_grad():
        base = model.features(x)
        border = x.clone()
        border[..., :2, :] = 0.0  # the top rows: outside the fovea
        changed = model.features(border) != base
    half = changed.shape[1] // 2
    assert not changed[:, :half].any() and changed[:, half:].any()


def test_a_clip_of_the_wrong_length_is_a_one_line_error():
    model = create_model("video_slow", **SMALL)
    with pytest.raises(UserError, match=r"expected \(B, 16, C, H, W\) clips"):
        model(torch.rand(1, 8, 1, SIZE, SIZE))
    with pytest.raises(UserError, match="fusion must be one of"):
        create_model("video_slow", fusion="sideways")
    with pytest.raises(UserError, match=r"expected \(B, 16, C, 32, 32\) clips"):
        create_model("video_transformer", **TINY_TRANSFORMER)(torch.rand(1, 16, 1, 24, 24))
    with pytest.raises(UserError, match="must be a multiple of tubelet"):
        create_model("video_transformer", frames=15)
    assert len(FUSIONS) == 7


@pytest.mark.data
@pytest.mark.parametrize(
    "model", ["single", "early", "late", "slow", "multires", "lstm", "c3d", "transformer"]
)
def test_every_video_preset_resumes_bit_identically(tmp_path, monkeypatch, model):
    """Each preset, shortened to 6 steps on a tiny clip set, stopped at step 3 and resumed,
    ends with the very weights and logs of the run that was never stopped."""
    from test_train import straight_and_resumed

    from neuralab import config

    require_dataset("fashion-mnist")
    monkeypatch.setenv("NEURALAB_CACHE", str(tmp_path / "cache"))
    small = (
        ["model.patch=8", "model.d_model=16", "model.n_heads=2", "model.n_layers=1"]
        if model == "transformer"
        else ["model.widths=[4,8,8]", "model.hidden=16"]
    )
    cfg = config.load(
        f"moving_fashion_{model}",
        [
            "data.clips_train=48",
            "data.clips_test=16",
            "data.clip_size=24",
            "data.frames=8",
            "train.batch_size=8",
            "train.max_steps=6",
            "train.val_every=3",
            "train.log_every=1",
            *small,
        ],
    )
    straight_and_resumed(tmp_path, cfg, stop_at=3)


class FirstFrameClass(torch.nn.Module):
    """A stand-in model whose clip prediction is the class named by its first frame's first
    pixel (value / 255), with probability ≈ 1."""

    def forward(self, x):
        cls = (x[:, 0, 0, 0, 0] * 255).round().long()
        return 20.0 * torch.nn.functional.one_hot(cls, 3).float()


def test_video_accuracy_averages_each_videos_clips_by_hand():
    """Two videos of 6 frames, clips of 4 (3 windows each, starting at frames 0, 1, 2). The
    first video's windows say 1, 1, 0 and its label is 1: the mean says 1 (right), its clips
    are 2/3 right. The second's say 0, 0, 1 for label 1: wrong, 1/3. So video accuracy 1/2
    and clip accuracy 3/6, in any batch size."""
    from neuralab.tasks.video import video_scores

    videos = torch.zeros(2, 6, 1, 2, 2, dtype=torch.uint8)
    videos[0, :3, 0, 0, 0] = torch.tensor([1, 1, 0])
    videos[1, :3, 0, 0, 0] = torch.tensor([0, 0, 1])
    labels = torch.tensor([1, 1])
    for batch in (1, 3, 100):
        scores = video_scores(FirstFrameClass(), videos, labels, 4, batch)
        assert scores == {
            "test/video_acc": 0.5,
            "test/video_clip_acc": 0.5,
            "test/videos": 2,
            "test/clips_per_video": 3,
        }


@pytest.mark.parametrize(("fusion", "frames"), [("single", [FRAMES // 2]), ("late", [0, 15])])
def test_clip_saliency_lies_only_on_the_frames_a_model_reads(fusion, frames, tmp_path):
    """The gradient of a single-frame model's logit is zero outside its middle frame, and a
    late-fusion model's outside its first and last: their frame shares are 0 there and sum
    to 1; the clip saliency plot is written."""
    from neuralab.probe.saliency import frame_shares, plot_clip_saliency, saliency

    torch.manual_seed(0)
    model = create_model(f"video_{fusion}", **SMALL)
    x = torch.rand(2, FRAMES, 1, SIZE, SIZE)
    maps = saliency(model, x, "grad")
    shares = frame_shares(maps)
    outside = [t for t in range(FRAMES) if t not in frames]
    assert (shares[:, outside] == 0).all() and (shares[:, frames] > 0).all()
    torch.testing.assert_close(shares.sum(1), torch.ones(2))
    out = plot_clip_saliency(
        x, maps, torch.tensor([0, 1]), torch.tensor([1, 1]), list("abcdefghij"), tmp_path / "s.png"
    )
    assert out.stat().st_size > 0
