"""``fashion-scenes-captions``: scenes of 1–3 Fashion-MNIST items with five reference
captions each (Karpathy & Fei-Fei 2015; Xu et al. 2015), where every caption can be checked
against the truth of the picture.

The scenes are ``fashion-scenes`` drawn under ``SceneRules``: a 64×64 canvas (by default),
colours from a named palette, item sides from three separated bands (small, medium, large).
Training scenes never hold the ``HELD_OUT_COLOURS`` (one colour per class: no "red sneaker"
is ever seen) nor the ``HELD_OUT_PAIRS`` of classes together, so the splits are:

- train and val: scenes from Fashion-MNIST's training images, without the held-out
  combinations; val's items are the held-out val images, train's the others
  (``scenes.source_items``);
- test: the i.i.d. split, drawn alike from the test images;
- test_comp: the compositional split, scenes from the test images in which every scene
  holds at least one held-out combination.

The captions come from ``caption_grammar`` (five per scene, drawn from a seed per scene);
the vocabulary is built from the training captions only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from neuralab.data import caption_grammar as grammar
from neuralab.data import scenes
from neuralab.errors import UserError
from neuralab.runs import write_atomic

if TYPE_CHECKING:
    from neuralab.config import DataConfig

NAME = "fashion-scenes-captions"
SOURCE = "fashion-scenes"  # the scene set it is drawn from (and cached with)
REFERENCES = 5
SPLITS = ("train", "val", "test", "test_comp")
BASE_SIZE = 64
BASE_BANDS = ((14, 19), (24, 29), (34, 40))  # small, medium, large item sides on 64 px
SIZES = ("small", "medium", "large")
HELD_OUT_COLOURS = frozenset((c, (3 * c + 1) % len(grammar.COLOURS)) for c in range(10))
HELD_OUT_PAIRS = frozenset({(0, 7), (1, 5), (2, 9), (3, 8), (4, 6)})
CANDIDATES = 8  # scenes drawn per compositional scene wanted (about 1 in 4 qualifies)
OBJECT_TARGETS = (11, len(grammar.COLOURS), len(SIZES))  # what object_cells gives a cell
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)


def bands(size: int) -> tuple[tuple[int, int], ...]:
    """The three bands of item sides on a canvas of ``size``, in proportion to 64 px."""
    return tuple(
        (round(lo * size / BASE_SIZE), round(hi * size / BASE_SIZE)) for lo, hi in BASE_BANDS
    )


def spec(size: int) -> scenes.SceneSpec:
    sides = bands(size)
    return scenes.SceneSpec(
        size=size,
        min_objects=1,
        max_objects=3,
        min_side=sides[0][0],
        max_side=sides[-1][1],
        max_iou=0.05,
        clutter=2,
    )


def rules(size: int, held_out: bool) -> scenes.SceneRules:
    """The rules of training-like scenes (``held_out``: without the held-out combinations),
    or of open ones."""
    return scenes.SceneRules(
        grammar.PALETTE,
        bands(size),
        HELD_OUT_COLOURS if held_out else frozenset(),
        HELD_OUT_PAIRS if held_out else frozenset(),
    )


def size_word(side: float, size: int) -> str:
    """small, medium or large for a box whose longer side is ``side``: the band it is
    nearest to, split half-way between bands."""
    b = bands(size)
    cuts = [(b[i][1] + b[i + 1][0]) / 2 for i in range(len(b) - 1)]
    return SIZES[int(np.searchsorted(cuts, side))]


def things(found: scenes.Scenes, i: int) -> list[grammar.Thing]:
    """Scene ``i``'s objects as captions see them."""
    colours = {c: k for k, c in enumerate(grammar.PALETTE)}
    size = found.images.shape[-1]
    out = []
    for j in range(*found.objects(i).indices(len(found.labels))):
        box = found.boxes[j]
        side = max(box[2] - box[0], box[3] - box[1])
        colour = colours.get(tuple(int(v) for v in found.tints[j]))
        if colour is None:
            raise UserError("this scene set was not drawn with the caption palette")
        out.append(
            grammar.Thing(
                int(found.labels[j]), colour, size_word(side, size), tuple(float(v) for v in box)
            )
        )
    return out


def is_novel(scene: list[grammar.Thing]) -> bool:
    """Whether a scene holds a held-out colour or a held-out pair of classes."""
    if any((t.cls, t.colour) in HELD_OUT_COLOURS for t in scene):
        return True
    classes = {t.cls for t in scene}
    return any(a in classes and b in classes for a, b in HELD_OUT_PAIRS)


def references(scene: list[grammar.Thing], seed: list[int]) -> list[str]:
    """The scene's reference captions, drawn from ``seed``."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return [grammar.describe(scene, rng) for _ in range(REFERENCES)]


def object_cells(scenes: list[list[grammar.Thing]], size: int, side: int) -> torch.Tensor:
    """(N, side², 3) int64 targets (of ``OBJECT_TARGETS`` values) of the side × side map of
    ``size``-pixel scenes: for the cell holding an item's centre, its class + 1, colour and
    size (an index of ``SIZES``); elsewhere class 0 (none) and -1 (no colour, no size)."""
    cells = torch.full((len(scenes), side * side, 3), -1, dtype=torch.int64)
    cells[..., 0] = 0
    for n, scene in enumerate(scenes):
        for t in scene:
            x0, y0, x1, y1 = t.box
            row = min(int((y0 + y1) / 2 * side / size), side - 1)
            col = min(int((x0 + x1) / 2 * side / size), side - 1)
            cells[n, row * side + col] = torch.tensor([t.cls + 1, t.colour, SIZES.index(t.size)])
    return cells


class CaptionSplit(NamedTuple):
    images: torch.Tensor  # (N, 3, S, S) uint8
    things: list[list[grammar.Thing]]
    references: list[list[str]]


def load_split(cfg: DataConfig, split: str) -> CaptionSplit:
    """A split (``SPLITS``) of the captioned scenes: train and val share
    ``cfg.scenes_train`` scenes, ``cfg.val_fraction`` of them for val, each drawn from its
    own items; test and test_comp hold ``cfg.scenes_test`` scenes each (test_comp fewer if
    the filter found fewer)."""
    from neuralab.data.splits import generated_size

    if split not in SPLITS:
        raise UserError(f"{NAME} has the splits {', '.join(SPLITS)}, not {split!r}")
    size, data_dir = cfg.scene_size, cfg.data_dir or None
    if split == "test_comp":
        drawn, n, seed, held_out = "test", CANDIDATES * cfg.scenes_test, 1, False
    else:
        drawn, seed, held_out = split, 0, True
        n = generated_size(split, cfg.scenes_train, cfg.scenes_test, cfg.val_fraction)
    found, _ = scenes.scene_set(SOURCE, drawn, n, spec(size), seed, data_dir, rules(size, held_out))
    all_things = [things(found, i) for i in range(len(found))]
    index = np.arange(len(found))
    if split == "test_comp":
        index = np.array([i for i, s in enumerate(all_things) if is_novel(s)][: cfg.scenes_test])
    code = {"train": 0, "test": 1, "test_comp": 2, "val": 3}[split]
    return CaptionSplit(
        torch.from_numpy(found.images[index]),
        [all_things[i] for i in index],
        [references(all_things[i], [seed, code, int(i)]) for i in index],
    )


class Vocabulary:
    """Words <-> ids; ids 0–3 are ``<pad> <bos> <eos> <unk>``."""

    def __init__(self, words: list[str]) -> None:
        self.words = [*SPECIALS, *words]
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: list[list[str]]) -> Vocabulary:
        """The words of the (training) captions, sorted."""
        return cls(sorted({w for refs in captions for c in refs for w in c.split()}))

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: str, length: int) -> list[int]:
        """The ids of ``caption``'s words and ``<eos>``, padded (or cut) to ``length``."""
        ids = [self.index.get(w, UNK) for w in caption.split()][: length - 1] + [EOS]
        return ids + [PAD] * (length - len(ids))

    def decode(self, ids: list[int]) -> str:
        """The words before the first ``<eos>`` (specials dropped)."""
        words = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                words.append(self.words[i])
        return " ".join(words)

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps({"words": self.words[len(SPECIALS) :]}))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            words = json.loads(path.read_text())["words"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"{path} is not a caption vocabulary ({err})") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise UserError(f"{path} is not a caption vocabulary (words must be strings)")
        return cls(words)


def encode_references(vocab: Vocabulary, refs: list[list[str]], length: int) -> torch.Tensor:
    """(N, REFERENCES, length) int64 ids of each scene's references, each ending in <eos>."""
    return torch.tensor([[vocab.encode(c, length) for c in r] for r in refs], dtype=torch.int64)
