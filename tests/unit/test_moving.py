"""moving-fashion: the generated video data (issue 21). The motion laws are checked on
hand-made items and canvases; the splits on small clip sets drawn from the real
Fashion-MNIST."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from conftest import require_dataset

from neuralab.data import moving
from neuralab.errors import UserError

SIZE, FRAMES = 48, 8


def blob(offset: float = 0.0) -> torch.Tensor:
    """One 28×28 source image: a smooth bright spot (a Gaussian of 3 pixels), ``offset``
    pixels right of the centre, so that resampling it moves its centroid and scales its
    area exactly (a hard edge would alias)."""
    grid = torch.arange(28, dtype=torch.float32) - 13.5
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    return torch.exp(-((xs - offset) ** 2 + ys**2) / (2 * 3.0**2))[None]


def one_item(motion: int, seed: int = 0) -> moving.Items:
    gen = torch.Generator().manual_seed(seed)
    zero = torch.zeros(1, dtype=torch.int64)
    return moving.draw_items(gen, zero, zero, torch.tensor([motion]), SIZE)


def painted(items: moving.Items, sources: torch.Tensor, frames: int = FRAMES) -> torch.Tensor:
    canvas = torch.zeros(1, frames, SIZE, SIZE)
    moving.render(items, sources, canvas, frames)
    return canvas[0]


@pytest.mark.parametrize("motion", range(len(moving.MOTIONS)))
def test_a_clip_played_backwards_is_its_twins_clip(motion):
    """The same draws under a class and under its twin give the same frames in reverse
    order, item images and still clutter included, so the twin classes differ only in the
    order of their frames."""
    gen_x = torch.Generator().manual_seed(3)
    sources = torch.rand(4, 28, 28, generator=gen_x)
    clip, source = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2])
    frames = []
    for m in (motion, moving.twin(motion)):
        gen = torch.Generator().manual_seed(7)
        items = moving.draw_items(gen, clip, source, torch.full((3,), m), SIZE)
        canvas = torch.full((2, FRAMES, SIZE, SIZE), 0.2)
        moving.render(items, sources, canvas, FRAMES)
        frames.append(canvas)
    assert moving.twin(moving.twin(motion)) == motion != moving.twin(motion)
    torch.testing.assert_close(frames[0].flip(1), frames[1], rtol=0, atol=1e-5)


def centroid(frame: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    mass = frame.sum()
    return torch.stack([(frame * xs).sum() / mass, (frame * ys).sum() / mass])


@pytest.mark.parametrize(
    ("name", "direction"),
    [("left", (-1, 0)), ("right", (1, 0)), ("up", (0, -1)), ("down", (0, 1))],
)
def test_a_translation_moves_the_item_by_its_speed_each_frame(name, direction):
    """An item in the middle of the frame moving by v pixels a frame: its centroid moves by
    v·direction between frames (y points down), and its mass (its look) stays the same."""
    item = one_item(moving.MOTIONS.index(name))
    item = item._replace(
        centre=torch.tensor([[SIZE / 2, SIZE / 2]], dtype=torch.float64),
        angle=torch.zeros(1, dtype=torch.float64),
    )
    speed = float(item.rates[0, :2].abs().max())
    clip = painted(item, blob())
    steps = torch.diff(torch.stack([centroid(f) for f in clip]), dim=0)
    expected = torch.tensor(direction, dtype=torch.float32) * speed
    torch.testing.assert_close(steps, expected.expand_as(steps), rtol=0, atol=0.02)
    masses = clip.sum((1, 2))
    torch.testing.assert_close(masses, masses[:1].expand_as(masses), rtol=0.01, atol=0)


def test_growing_scales_the_area_by_e_to_the_2k_per_frame():
    """A spot's painted area grows by e^(2k) a frame under "grow" (k its log-side rate),
    and "shrink" is the same clip backwards."""
    item = one_item(moving.MOTIONS.index("grow"))
    item = item._replace(
        centre=torch.tensor([[SIZE / 2, SIZE / 2]], dtype=torch.float64),
        angle=torch.zeros(1, dtype=torch.float64),
    )
    k = float(item.rates[0, 3])
    assert k > 0
    masses = painted(item, blob()).sum((1, 2))
    ratios = masses[1:] / masses[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, math.exp(2 * k)), rtol=0.01, atol=0)


def test_clockwise_turns_the_item_clockwise_on_the_screen():
    """A spot right of the item's centre (+x) turns by ω a frame towards +y (down on the
    screen), which is clockwise as seen."""
    item = one_item(moving.MOTIONS.index("clockwise"))
    item = item._replace(
        centre=torch.tensor([[SIZE / 2, SIZE / 2]], dtype=torch.float64),
        angle=torch.zeros(1, dtype=torch.float64),
        log_side=torch.tensor([math.log(SIZE * 0.8)], dtype=torch.float64),
    )
    omega = float(item.rates[0, 2])
    clip = painted(item, blob(8.0))
    angles = []
    for frame in clip:
        x, y = centroid(frame) + 0.5 - SIZE / 2  # pixel i covers [i, i + 1)
        angles.append(math.atan2(float(y), float(x)))
    tau = np.arange(FRAMES) - (FRAMES - 1) / 2
    np.testing.assert_allclose(angles, omega * tau, atol=0.03)


def test_generation_is_deterministic_and_the_variants_label_what_they_say():
    """Same seed, same clips bit for bit; another seed differs. Motion clips hold 1–2 items
    and are labelled by their motion; appearance clips hold one item, labelled by its
    class."""
    gen = np.random.default_rng(0)
    source_x = gen.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    source_y = np.arange(30) % 10
    a = moving.generate(source_x, source_y, 24, "motion", 6, 32, [0, 0])
    b = moving.generate(source_x, source_y, 24, "motion", 6, 32, [0, 0])
    for name, x, y in zip(moving.Clips._fields, a, b, strict=True):
        assert np.array_equal(x, y), name
    assert not np.array_equal(
        moving.generate(source_x, source_y, 24, "motion", 6, 32, [1, 0]).clips, a.clips
    )
    assert a.clips.shape == (24, 6, 1, 32, 32) and a.clips.dtype == np.uint8
    assert np.array_equal(a.labels, a.motions)
    held = (a.sources >= 0).sum(1)
    assert held.min() >= 1 and held.max() <= 2
    assert np.array_equal(a.items[a.sources >= 0], source_y[a.sources[a.sources >= 0]])
    looks = moving.generate(source_x, source_y, 24, "appearance", 6, 32, [0, 0])
    assert (looks.sources[:, 0] >= 0).all() and (looks.sources[:, 1] == -1).all()
    assert np.array_equal(looks.labels, source_y[looks.sources[:, 0]])
    both = moving.generate(source_x, source_y, 24, "mixed", 6, 32, [0, 0])
    assert np.array_equal(both.labels, both.items[:, 0] * 10 + both.motions)
    names = moving.classes("mixed")
    assert len(names) == 100 and names[both.labels[0]] == (
        f"{moving.classes('appearance')[both.items[0, 0]]}/{moving.MOTIONS[both.motions[0]]}"
    )


def test_items_that_name_the_class_are_upright_in_the_middle_of_the_clip():
    """Upright items (appearance and mixed clips) have angle 0 at τ = 0 and otherwise the
    very numbers a freely turned item draws from the same generator."""
    clip, source = torch.arange(6), torch.zeros(6, dtype=torch.int64)
    motion = torch.arange(6)
    free = moving.draw_items(torch.Generator().manual_seed(3), clip, source, motion, 32)
    upright = moving.draw_items(torch.Generator().manual_seed(3), clip, source, motion, 32, True)
    assert (free.angle != 0).all() and (upright.angle == 0).all()
    for name in ("centre", "log_side", "rates"):
        assert torch.equal(getattr(free, name), getattr(upright, name)), name


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="data.variant must be one of motion, appearance, mixed"):
        moving.clip_set("train", 4, variant="colour", data_dir=tmp_path)
    with pytest.raises(UserError, match="splits train, val, test"):
        moving.clip_set("dev", 4, data_dir=tmp_path)
    with pytest.raises(UserError, match="data.frames must be in"):
        moving.clip_set("train", 4, frames=2, data_dir=tmp_path)


@pytest.mark.data
def test_no_test_image_moves_in_a_train_clip(tmp_path):
    """Items of train clips are Fashion-MNIST train images, none a test image (by the hash of
    its pixels) nor one of val's held-out images, val and test clips hold only their own
    images; a second call reads the cache."""
    from neuralab.data.scenes import source_items

    require_dataset("fashion-mnist")
    train, path = moving.clip_set("train", 40, frames=6, size=32, data_dir=tmp_path)
    test, _ = moving.clip_set("test", 20, frames=6, size=32, data_dir=tmp_path)
    val, _ = moving.clip_set("val", 20, frames=6, size=32, data_dir=tmp_path)
    train_x, _ = source_items("fashion-scenes", "train")
    test_x, _ = source_items("fashion-scenes", "test")
    val_x, _ = source_items("fashion-scenes", "val")

    def hashes(images: np.ndarray) -> set[str]:
        return {hashlib.sha256(im.tobytes()).hexdigest() for im in images}

    in_train = hashes(train_x[train.sources[train.sources >= 0]])
    in_test = hashes(test_x[test.sources[test.sources >= 0]])
    assert not in_train & hashes(test_x) and not in_test & hashes(train_x)
    assert not hashes(val_x[val.sources[val.sources >= 0]]) & hashes(train_x)
    again, same_path = moving.clip_set("train", 40, frames=6, size=32, data_dir=tmp_path)
    assert same_path == path and np.array_equal(again.clips, train.clips)
