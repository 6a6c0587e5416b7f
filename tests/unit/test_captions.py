"""Captioning (issue 20): the caption grammar and its parser, the fact scores, the metrics
against their reference implementations, the captioners and their decoding."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import sacrebleu
import torch

from neuralab.data import caption_grammar as grammar
from neuralab.data.captions import EOS, OBJECT_TARGETS, PAD, UNK, Vocabulary, object_cells
from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.models.captioner import (
    BOS,
    Captioner,
    CaptionerConfig,
    doubly_stochastic,
    objects_loss,
)
from neuralab.models.search import beam_search, greedy, sample
from neuralab.tasks.caption_metrics import bleu, cider_d

BAG, BOOT, SHIRT = 8, 9, 6
RED, BLUE, WHITE = 0, 2, 6


def thing(cls, colour, size, x, y, side=20):
    return grammar.Thing(cls, colour, size, (x, y, x + side, y + side))


SCENES = [
    [thing(BAG, RED, "small", 2, 20)],
    [thing(BAG, RED, "small", 2, 20), thing(BOOT, BLUE, "medium", 40, 24)],
    [thing(SHIRT, WHITE, "large", 0, 0), thing(SHIRT, WHITE, "large", 30, 30)],
    [
        thing(BOOT, BLUE, "medium", 20, 2),
        thing(BAG, RED, "large", 22, 40),
        thing(1, 3, "small", 44, 8),
    ],
]


@pytest.mark.parametrize("scene", SCENES)
def test_every_reference_parses_back_to_the_scenes_facts(scene):
    """Round trip: 200 captions of each scene, in all their wordings, state only true facts
    and every count, colour and size fact of the scene."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        caption = grammar.describe(scene, rng)
        found = grammar.score(caption, scene)
        assert found.stated > 0 and found.correct == found.stated, caption
        assert found.recalled == found.truth, caption


def test_a_wrong_caption_scores_what_a_hand_count_gives():
    """Truth: a small red bag left of a (medium) blue boot. "a small red bag to the right of
    a blue boot" states 6 facts (2 counts, 2 colours, 1 size, 1 relation), 5 of them true, and
    all 5 true facts of the scene: precision 5/6, recall 1. A caption that names a shirt
    states 2 facts, both false, and recalls nothing of the bag."""
    scene = SCENES[1]
    found = grammar.score("a small red bag to the right of a blue boot", scene)
    assert found == grammar.FactScore(correct=5, stated=6, recalled=5, truth=5)
    found = grammar.score("a green shirt", SCENES[0])
    assert found == grammar.FactScore(correct=0, stated=2, recalled=0, truth=3)
    scores = grammar.fact_scores(["a small red bag to the right of a blue boot"], [scene])
    assert scores["fact_precision"] == pytest.approx(5 / 6) and scores["fact_recall"] == 1
    assert scores["fact_f1"] == pytest.approx(2 * (5 / 6) / (5 / 6 + 1))


def test_the_breakdown_puts_each_hand_counted_fact_in_its_kind():
    """The same two captions by kind: the wrong relation is the one false fact of the first;
    the shirt's count and colour are false, the bag's three facts unrecalled, and the dangling
    "and" is one unreadable clause."""
    captions = ["a small red bag to the right of a blue boot", "a green shirt and"]
    found = grammar.fact_breakdown(captions, [SCENES[1], SCENES[0]])
    assert found["count"] == {"stated": 3, "correct": 2, "truth": 3, "recalled": 2}
    assert found["colour"] == {"stated": 3, "correct": 2, "truth": 3, "recalled": 2}
    assert found["size"] == {"stated": 1, "correct": 1, "truth": 2, "recalled": 1}
    assert found["relation"] == {"stated": 1, "correct": 0}
    assert found["unreadable"] == 1


@pytest.mark.parametrize(
    ("caption", "errors"),
    [
        ("", 0),
        ("bag red a", 1),
        ("a red bag and", 1),
        ("a red bag beside a blue boot", 1),
        ("a picture of a red bag , a blue boot and a small red bag", 0),
    ],
)
def test_unreadable_clauses_count_as_errors(caption, errors):
    assert grammar.parse(caption).errors == errors


def test_relations_by_hand():
    """A bag at x 2..22 and a boot at x 40..60 (centres 20 px apart across, 4 px down): the bag
    is left of the boot, the boot right of the bag; neither is above the other (4 < 0.5·38);
    a diagonal pair admits both of its words."""
    bag, boot = SCENES[1]
    assert grammar.relation(bag, boot) == "left" and grammar.relation(boot, bag) == "right"
    assert grammar.holds("left", bag, boot) and not grammar.holds("above", bag, boot)
    a, b = thing(BAG, RED, "small", 0, 0), thing(BOOT, BLUE, "small", 20, 16)
    assert grammar.holds("left", a, b) and grammar.holds("above", a, b)


def test_vocabulary_round_trip_and_refusals(tmp_path):
    vocab = Vocabulary.build([["a red bag", "two bags"], ["a blue boot"]])
    ids = vocab.encode("a red zebra bag", 8)
    assert ids[2] == UNK and ids[4] == EOS and ids[5:] == [PAD] * 3
    assert vocab.decode(vocab.encode("a blue boot", 6)) == "a blue boot"
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json").words == vocab.words
    (tmp_path / "bad.json").write_text('{"words": [1, 2]}')
    with pytest.raises(UserError, match="not a caption vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")


def test_bleu_on_a_hand_worked_pair():
    """hyp "a red bag and a blue boot" against "a red bag and a green boot": n-gram
    precisions 6/7, 4/6, 3/5, 2/4, equal lengths (no brevity penalty), so BLEU-4 is their
    geometric mean; BLEU-1 is 6/7. sacreBLEU's signature comes with it."""
    got = bleu(["a red bag and a blue boot"], [["a red bag and a green boot"]])
    assert got["bleu4"] == pytest.approx((6 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25)
    assert got["bleu1"] == pytest.approx(6 / 7)
    assert "nrefs:1" in got["signature"] and "tok:13a" in got["signature"]
    direct = sacrebleu.corpus_bleu(["a red bag and a blue boot"], [["a red bag and a green boot"]])
    assert got["bleu4"] == pytest.approx(direct.score / 100)


def test_cider_d_equals_the_coco_caption_code():
    """The expected values were computed by pycocoevalcap 1.2 (the COCO caption evaluation
    code, `Cider().compute_score`) on these captions: corpus 4.031387417667333."""
    references = [
        [
            "a red bag to the left of a blue boot",
            "a blue boot right of a red bag",
            "a picture of a red bag and a blue boot",
        ],
        ["two small white shirts", "a photo of two little white shirts", "two small white shirts"],
        [
            "a big green coat above a yellow sandal",
            "a yellow sandal below a large green jacket",
            "a large green coat and a yellow sandal",
        ],
    ]
    hypotheses = [
        "a red bag and a blue boot",
        "a small white shirt",
        "a big green coat above a yellow sandal",
    ]
    assert cider_d(hypotheses, references) == pytest.approx(4.031387417667333, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("caption_lstm", {}),
        ("caption_lstm", {"objects": 1.0, "object_targets": OBJECT_TARGETS}),
        ("caption_attention", {}),
        ("caption_attention", {"stride": 4}),
        (
            "caption_attention",
            {"deep_output": True, "objects": 0.5, "object_targets": OBJECT_TARGETS},
        ),
    ],
)
def test_teacher_forcing_equals_decoding_step_by_step(name, options):
    """``forward`` (the fused LSTM over the whole sequence for NeuralTalk) gives the logits
    that ``step``, which the searches use, gives word by word, with or without the deep
    output layer; attention weights sum to 1 over the 8×8 (or, at stride 4, 16×16) cells of
    a 64×64 image; the objects head gives every cell 11 + 8 + 3 logits."""
    torch.manual_seed(0)
    sizes = {"widths": (8, 16, 16), "hidden": 24, "embed": 12, **options}
    model = create_model(name, vocab_size=30, **sizes).eval()
    x, words = torch.rand(3, 3, 64, 64), torch.randint(0, 30, (3, 7))
    logits, alphas, objects = model(x, words)
    cells = (64 // options.get("stride", 8)) ** 2
    assert objects.shape == (3, cells, 22 if "objects" in options else 0)
    memory = model.encode(x)
    state = model.start(memory)
    for t in range(7):
        step_logits, state, alpha = model.step(memory, state, words[:, t])
        torch.testing.assert_close(step_logits, logits[:, t], rtol=1e-5, atol=1e-5)
    if model.attends:
        assert alphas.shape == (3, 7, cells)
        torch.testing.assert_close(alphas.sum(-1), torch.ones(3, 7))


SMALL = {"vocab_size": 30, "widths": (8, 8, 16), "hidden": 24, "embed": 12}


def test_deep_output_is_the_papers_readout():
    """With ``deep_output`` the logits of a step are L_o(tanh(E y + L_h h + L_z z)) (Xu et
    al. 2015, eq. 7) of the step's new state h and its attended context z, computed here
    from the step's own pieces; without it, the NeuralTalk caption model refuses it."""
    torch.manual_seed(0)
    model = create_model("caption_attention", **SMALL, deep_output=True).eval()
    x, words = torch.rand(2, 3, 64, 64), torch.tensor([5, 7])
    memory = model.encode(x)
    state = model.start(memory)
    logits, (h, _), _ = model.step(memory, state, words)
    context, _ = model.attend(memory, state[0])
    read = model.embed(words) + h @ model.out_h.weight.T + model.out_h.bias
    read = read + context @ model.out_z.weight.T + model.out_z.bias
    expected = torch.tanh(read) @ model.out.weight.T + model.out.bias
    torch.testing.assert_close(logits, expected)
    with pytest.raises(UserError, match="deep_output"):
        create_model("caption_lstm", vocab_size=30, deep_output=True)


def test_object_cells_by_hand():
    """A 20-px item at (2, 20) on a 64-px scene has its centre (12, 30) in cell (row 3,
    col 1) of an 8×8 map and cell (7, 3) of a 16×16 one; its targets are class + 1, colour
    and size index; every other cell is class 0 with no colour and no size."""
    scene = [thing(BAG, RED, "small", 2, 20), thing(BOOT, BLUE, "large", 40, 24, side=36)]
    for side, first in ((8, 3 * 8 + 1), (16, 7 * 16 + 3)):
        cells = object_cells([scene], 64, side)
        assert cells.shape == (1, side * side, 3)
        assert cells[0, first].tolist() == [BAG + 1, RED, 0]
        second = cells[0, :, 0].nonzero().flatten().tolist()
        assert len(second) == 2 and first in second
        other = [i for i in second if i != first][0]
        assert cells[0, other].tolist() == [BOOT + 1, BLUE, 2]
        assert other == min(int(42 / 64 * side), side - 1) * side + int(58 / 64 * side)
        empty = cells[0, cells[0, :, 0] == 0]
        assert (empty[:, 1:] == -1).all() and len(empty) == side * side - 2


@torch.no_grad()
def test_the_task_reads_the_cells_targets_after_the_words():
    """A training batch's y is the (B, T) words then the flattened (B, P, 3) cell targets;
    the task's loss is the model's loss of those words and cells, which is the words' loss
    plus the objects loss weighted by ``objects``."""
    from neuralab.models.search import teacher_inputs
    from neuralab.tasks.caption import CaptionTask

    torch.manual_seed(0)
    model = create_model(
        "caption_attention", **SMALL, max_len=6, objects=0.5, object_targets=OBJECT_TARGETS
    ).eval()
    x, words = torch.rand(2, 3, 64, 64), torch.randint(3, 30, (2, 6))
    scenes = [[thing(BAG, RED, "small", 2, 20)], [thing(BOOT, BLUE, "large", 10, 10, side=36)]]
    cells = object_cells(scenes, 64, 8)
    total, stats = CaptionTask().loss(model, x, torch.cat([words, cells.flatten(1)], 1))
    out = model(x, teacher_inputs(words, BOS))
    words_only, _ = model.loss(out, words)
    named = objects_loss(out[2], cells, model.config.object_targets)
    assert float(total) == pytest.approx(float(words_only + 0.5 * named), rel=1e-6)
    assert float(stats["objects"]) == pytest.approx(float(named), rel=1e-6) and float(named) > 0


def test_objects_loss_is_the_sum_of_the_targets_cross_entropies():
    """Each target's mean negative log-probability over the cells that have it (-1 ignored),
    summed over the targets, written out with loops."""
    torch.manual_seed(0)
    sizes = (4, 3)
    logits = torch.randn(2, 5, 7)
    cells = torch.tensor(
        [[[0, -1], [2, 1], [0, -1], [3, 0], [0, -1]], [[1, 2], [0, -1], [0, -1], [0, -1], [2, 2]]]
    )
    expected = 0.0
    for k, (offset, n) in enumerate(((0, 4), (4, 3))):
        terms = [
            -float(torch.log_softmax(logits[b, p, offset : offset + n], 0)[cells[b, p, k]])
            for b in range(2)
            for p in range(5)
            if cells[b, p, k] >= 0
        ]
        expected += sum(terms) / len(terms)
    assert float(objects_loss(logits, cells, sizes)) == pytest.approx(expected, rel=1e-6)


def test_doubly_stochastic_term_is_the_formula():
    """mean over images and cells of (1 − Σ_t α_ti)², the sum over real words only, written
    out with loops."""
    torch.manual_seed(0)
    alphas = torch.softmax(torch.randn(2, 4, 5), -1)
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    expected = 0.0
    for b in range(2):
        for i in range(5):
            attended = sum(float(alphas[b, t, i]) for t in range(4) if valid[b, t])
            expected += (1 - attended) ** 2
    assert float(doubly_stochastic(alphas, valid)) == pytest.approx(expected / 10)


@pytest.mark.parametrize("name", ["caption_lstm", "caption_attention"])
def test_beam_of_one_is_greedy(name):
    torch.manual_seed(1)
    model = create_model(name, vocab_size=20, widths=(8, 8, 8), hidden=16, embed=8).eval()
    x = torch.rand(5, 3, 64, 64)
    assert [ids for ids, _ in greedy(model, x, 10)] == [
        ids for ids, _ in beam_search(model, x, 10, 1)
    ]


class Toy(Captioner):
    """A decoder whose next word depends on the last one only: after <bos>, A 0.6 and B 0.4;
    after A, A 0.34, B 0.33 and <eos> 0.33; after B, <eos>. Greedy says A A A ...; the likeliest
    whole caption is "B" (0.4, against 0.6·0.33 = 0.198 for "A")."""

    A, B = 3, 4

    def __init__(self) -> None:
        super().__init__(CaptionerConfig(vocab_size=5, widths=(1, 1, 1), hidden=1, embed=1))
        table = torch.full((5, 5), 1e-9)
        table[BOS, self.A], table[BOS, self.B] = 0.6, 0.4
        table[self.A, self.A], table[self.A, self.B], table[self.A, EOS] = 0.34, 0.33, 0.33
        table[self.B, EOS] = 1.0
        table[EOS, EOS] = 1.0
        self.table = table.log()

    def encode(self, x):
        return (x.new_zeros(len(x), 1),)

    def start(self, memory):
        return (memory[0],)

    def step(self, memory, state, words):
        return self.table[words], state, memory[0].new_zeros(len(words), 0)


def test_beam_search_finds_the_likeliest_caption_greedy_misses():
    model, x = Toy(), torch.zeros(2, 3, 16, 16)
    assert greedy(model, x, 4)[0][0] == [Toy.A] * 4
    assert [ids for ids, _ in beam_search(model, x, 4, beam=2, alpha=0.0)] == [[Toy.B]] * 2
    assert math.isclose(float(model.table[BOS, Toy.B].exp()), 0.4, rel_tol=1e-6)


def test_sampling_follows_the_seed_and_refuses_negative_temperature():
    model = Toy()
    x = torch.zeros(50, 3, 16, 16)
    one = sample(model, x, 6, 1.0, torch.Generator().manual_seed(0))
    two = sample(model, x, 6, 1.0, torch.Generator().manual_seed(0))
    assert [a for a, _ in one] == [b for b, _ in two]
    firsts = [ids[0] for ids, _ in one]
    assert {Toy.A, Toy.B} == set(firsts)  # both openings drawn at temperature 1
    with pytest.raises(UserError, match="temperature must be >= 0"):
        sample(model, x, 6, -1.0)


# ----------------------------------------------------------------------------- on real data

TINY = [
    "data.scenes_train=160",
    "data.scenes_test=24",
    "data.val_fraction=0.1",
    "model.widths=8,8,16",
    "model.embed=16",
    "model.hidden=32",
    "model.attention=16",
    "train.batch_size=16",
    "train.eval_batch_size=50",
    "train.log_every=1",
    "train.val_every=6",
]


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    from conftest import require_dataset

    from neuralab import config
    from neuralab.data import captions

    require_dataset("fashion-mnist")
    cfg = config.load("scenes_caption_attention", TINY)
    data_cfg = dataclasses.replace(cfg.data, data_dir=str(tmp_path_factory.mktemp("scenes")))
    return data_cfg, {s: captions.load_split(data_cfg, s) for s in captions.SPLITS}


@pytest.mark.data
def test_splits_hold_out_the_combinations_and_are_reproducible(splits):
    """Train and val scenes never hold a held-out colour or pair of classes, and the i.i.d.
    test split neither; every compositional test scene holds one; every reference of every
    split parses back to its scene's facts; the vocabulary of the training captions covers
    the other splits' words (only combinations are new); loading again gives the same
    images and captions."""
    from neuralab.data import captions

    data_cfg, found = splits
    for split in ("train", "val", "test"):
        assert not any(captions.is_novel(s) for s in found[split].things), split
    assert len(found["test_comp"].things) == 24
    assert all(captions.is_novel(s) for s in found["test_comp"].things)
    for split in captions.SPLITS:
        for scene, refs in zip(found[split].things, found[split].references, strict=True):
            assert 1 <= len(scene) <= 3 and len(refs) == captions.REFERENCES
            for ref in refs:
                s = grammar.score(ref, scene)
                assert s.correct == s.stated and s.recalled == s.truth, ref
    vocab = Vocabulary.build(found["train"].references)
    words = {w for refs in found["test_comp"].references for c in refs for w in c.split()}
    assert words <= set(vocab.words)
    again = captions.load_split(data_cfg, "test_comp")
    assert torch.equal(again.images, found["test_comp"].images)
    assert again.references == found["test_comp"].references


@pytest.mark.data
def test_sizes_are_facts_of_the_picture(splits):
    """Each thing's size word comes from its box, and the three bands of item sides stay
    apart in the boxes: no box side falls between two bands' cuts ambiguously (every small box
    is at most 21 px, every large one at least 32 px on the 64 px canvas)."""
    _, found = splits
    sides = {"small": [], "medium": [], "large": []}
    for scene in found["train"].things:
        for t in scene:
            x0, y0, x1, y1 = t.box
            sides[t.size].append(max(x1 - x0, y1 - y0))
    assert max(sides["small"]) <= 21 and min(sides["large"]) >= 32
    assert all(sides.values())


@pytest.mark.data
@pytest.mark.parametrize(
    ("preset", "options"),
    [
        ("scenes_caption_lstm", []),
        ("scenes_caption_attention", []),
        ("scenes_caption_attention", ["model.deep_output=true", "model.objects=1"]),
    ],
)
def test_captioning_resumes_bit_identically(tmp_path, monkeypatch, preset, options):
    """12 steps straight == 5 steps, Ctrl-C, resume, 7 steps: identical parameters and the
    same validation BLEU-4 and fact F1, for both captioners, and with the deep output layer
    and the objects loss (whose targets ride in the batches)."""
    from conftest import require_dataset
    from test_train import straight_and_resumed

    from neuralab import config

    require_dataset("fashion-mnist")
    monkeypatch.setenv("NEURALAB_CACHE", str(tmp_path / "cache"))
    cfg = config.load(preset, [*TINY, *options, "train.max_steps=12"])
    done, resumed = straight_and_resumed(tmp_path, cfg, 5)
    for key in ("val/bleu4", "val/fact_f1", "val/loss"):
        assert resumed[key] == done[key] and math.isfinite(done[key])
    assert done["val/examples"] == 16
