"""Machine translation (issue 22): Bahdanau attention against its formula, cross-attention
that never weighs a pad, teacher forcing equal to stepping (the Transformer's KV cache equal
to recomputing the whole prefix), beam 1 equal to greedy, sacreBLEU on a hand-worked case,
the verse-alignment rule and the book splits, length-bucketed batches, and the kind of run
training and resuming on the real corpus."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import require_dataset

from neuralab.data import bible
from neuralab.models import create_model
from neuralab.models.attention import CrossAttention
from neuralab.models.search import beam_search, greedy
from neuralab.models.seq2seq import label_smoothed_loss
from neuralab.tasks.translate import BucketBatches, corpus_scores, encode_targets
from neuralab.text.bpe import BPETokenizer

NAMES = ["seq2seq_gru", "seq2seq_attention", "seq2seq_transformer"]
SMALL = dict(vocab_size=40, max_len=24, d_embed=12, hidden=10, attention=8, d_model=16,
             n_heads=2, n_layers=2)  # fmt: skip


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three sources (one padded after 4 tokens, one after 2) and their decoder inputs."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(3, 40, (3, 7), generator=gen)
    src[1, 4:] = 0
    src[2, 2:] = 0
    words = torch.randint(3, 40, (3, 6), generator=gen)
    words[:, 0] = 1
    return src, words


def test_bahdanau_attention_is_its_formula():
    """e_j = vᵀ tanh(W s + U h_j + b), α = softmax over the real source tokens, c = Σ α_j h_j,
    computed here token by token from the model's own weights."""
    torch.manual_seed(0)
    model = create_model("seq2seq_attention", **SMALL).eval()
    src, _ = batch()
    memory = model.encode(src)
    s = torch.randn(3, 10)
    context, alpha = model.attend(memory, s)
    annotations = memory[0]
    W, U, b, v = model.w_a.weight, model.u_a.weight, model.u_a.bias, model.v_a.weight[0]
    for i, length in enumerate((7, 4, 2)):
        e = torch.stack(
            [v @ torch.tanh(W @ s[i] + U @ annotations[i, j] + b) for j in range(length)]
        )
        expected = torch.softmax(e, 0)
        torch.testing.assert_close(alpha[i, :length], expected, rtol=1e-5, atol=1e-6)
        assert (alpha[i, length:] == 0).all()
        torch.testing.assert_close(
            context[i], expected @ annotations[i, :length], rtol=1e-5, atol=1e-6
        )


def test_the_encoder_reads_no_padding():
    """A source's annotations and final states are the same padded to 7 or to 12 tokens."""
    torch.manual_seed(0)
    model = create_model("seq2seq_attention", **SMALL).eval()
    src, _ = batch()
    longer = torch.cat([src, torch.zeros(3, 5, dtype=torch.long)], 1)
    short, long = model.encode(src), model.encode(longer)
    torch.testing.assert_close(long[0][:, :7], short[0])
    torch.testing.assert_close(long[3], short[3])


def test_cross_attention_never_weighs_a_pad_and_rows_sum_to_one():
    """And the fused path (scaled_dot_product_attention) gives the manual path's output."""
    torch.manual_seed(0)
    attn = CrossAttention(16, 4).eval()
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    keep = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    kv = attn.memory_kv(memory)
    y, weights = attn(x, kv, keep, need_weights=True)
    assert weights.shape == (2, 4, 5, 6) and (weights[0, ..., 3:] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))
    torch.testing.assert_close(attn(x, kv, keep), y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_teacher_forcing_equals_decoding_step_by_step(name):
    """The logits of every next word at once (teacher forcing, one pass over the target)
    equal those of stepping one word at a time from the state, for the Transformer with its
    KV cache: the cache gives what recomputing the whole prefix gives. A pad of the source
    gets no attention weight at any step."""
    torch.manual_seed(0)
    model = create_model(name, **SMALL).eval()
    src, words = batch()
    with torch.no_grad():
        full, weights = model(src, words, need_weights=True)
        memory, state = model.encode(src), None
        state = model.start(memory)
        stepped = []
        for t in range(words.shape[1]):
            logits, state, _ = model.step(memory, state, words[:, t])
            stepped.append(logits)
    torch.testing.assert_close(torch.stack(stepped, 1), full, rtol=1e-4, atol=1e-5)
    if weights.shape[-1]:
        assert (weights[1, :, 4:] == 0).all() and (weights[2, :, 2:] == 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6))


def test_the_transformer_decoder_is_causal():
    """Changing the word at step 3 leaves the logits of steps 0-2 unchanged."""
    torch.manual_seed(0)
    model = create_model("seq2seq_transformer", **SMALL).eval()
    src, words = batch()
    other = words.clone()
    other[:, 3] = (other[:, 3] + 1) % 40
    with torch.no_grad():
        a, b = model(src, words), model(src, other)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


@pytest.mark.parametrize("name", NAMES)
def test_beam_of_one_is_greedy(name):
    """(The shared search finds the likeliest output greedy misses: tests/unit/test_captions.)"""
    torch.manual_seed(0)
    model = create_model(name, **SMALL).eval()
    src, _ = batch()
    assert [i for i, _ in beam_search(model, src, 10, beam=1)] == [
        i for i, _ in greedy(model, src, 10)
    ]
    beamed = beam_search(model, src, 10, beam=3)
    assert len(beamed) == 3 and all(len(ids) <= 10 for ids, _ in beamed)


def test_label_smoothing_zero_is_cross_entropy_over_real_tokens():
    """And with smoothing 0.1 the loss is PyTorch's own label-smoothed cross-entropy."""
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 4, 9), torch.randint(1, 9, (2, 4))
    targets[0, 2:] = 0
    loss, stats = label_smoothed_loss(logits, targets, pad_id=0)
    real = targets != 0
    expected = F.cross_entropy(logits[real], targets[real])
    torch.testing.assert_close(loss, expected)
    assert int(stats["count"]) == 6
    assert float(stats["ce"]) == pytest.approx(6 * expected.item(), rel=1e-5)
    smoothed, stats = label_smoothed_loss(logits, targets, pad_id=0, smoothing=0.1)
    assert smoothed.item() != pytest.approx(loss.item())
    oracle = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=0,
                             label_smoothing=0.1)  # fmt: skip
    torch.testing.assert_close(smoothed, oracle)
    assert float(stats["ce"]) == pytest.approx(6 * expected.item(), rel=1e-5)


def test_sacrebleu_on_a_hand_worked_case():
    """ "the cat sat on the mat" against "the cat sat on a mat": 1- to 4-gram precisions 5/6,
    3/5, 2/4, 1/3, no brevity penalty (6 words each): BLEU = (5/6·3/5·2/4·1/3)^¼ = 53.73."""
    scores = corpus_scores(["the cat sat on the mat"], ["the cat sat on a mat"])
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert scores["bleu"] == pytest.approx(expected, abs=1e-9)
    assert math.isclose(expected, 53.7284965, rel_tol=1e-7)
    assert scores["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert corpus_scores(["a b c"], ["a b c"])["chrf"] == pytest.approx(100.0)


def test_targets_end_with_eos_and_are_cut_before_it():
    tok = BPETokenizer.train("a bb ccc dddd " * 20, 270, special=["<pad>", "<bos>", "<eos>"])
    ids, cut = encode_targets(tok, ["a", "a bb ccc dddd a bb ccc dddd"], 5)
    eos, pad = tok.special["<eos>"], tok.special["<pad>"]
    assert ids.shape == (2, 5) and cut == 1
    assert ids[1, -1] == eos and ids[0, 1] == eos and (ids[0, 2:] == pad).all()


def test_bucketed_batches_are_a_permutation_of_similar_lengths():
    """Each epoch every pair once, in batches whose targets have similar lengths, cut to
    their longest row; the same (seed, step) gives the same batch."""
    n = 205  # 20 batches, and 5 pairs left over
    lengths = torch.randint(1, 30, (n,), generator=torch.Generator().manual_seed(0))
    y = torch.zeros(n, 30, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        y[i, :length] = 5
    x = torch.arange(n)[:, None].repeat(1, 3) + 1  # row i's source holds i + 1
    batches = BucketBatches(x, y, 10, seed=3, pad=0)
    seen, spreads = [], []
    for step in range(batches.steps_per_epoch):
        b = batches.get(step)
        seen += (b.x[:, 0] - 1).tolist()
        real = (b.y != 0).sum(1)
        assert b.y.shape[1] == int(real.max())
        spreads.append(int(real.max() - real.min()))
    assert len(seen) == 200 and len(set(seen)) == 200
    assert max(spreads) <= 6  # 205 pairs in one window of 50 batches: sorted by length
    again = BucketBatches(x, y, 10, seed=3, pad=0)
    assert torch.equal(again.get(7).x, batches.get(7).x)


def test_misaligned_pairs_are_dropped_by_the_stated_rule(monkeypatch):
    """Chapter 2 of "Gen" has a verse more on one side: it and chapter 3 go (versification);
    chapter 4 has three pairs of very different lengths (shifted); one more such pair in
    chapter 5 goes alone (ratio); the rest stay."""
    word = "word " * 10
    a, b = {}, {}
    for chapter in range(1, 6):
        for verse in range(1, 6):
            a[f"Gen {chapter}:{verse}"] = word
            b[f"Gen {chapter}:{verse}"] = word
    b["Gen 2:6"] = word
    for verse in (1, 2, 3):
        b[f"Gen 4:{verse}"] = "x"
    b["Gen 5:2"] = word * 3
    monkeypatch.setattr(bible, "read_verses", lambda t, d=None: a if t == "web" else b)
    pairs, dropped = bible.aligned_pairs("web", "rv1909")
    assert dropped == {"versification": 10, "shifted": 5, "ratio": 1}
    assert [p[0] for p in pairs] == [f"Gen 1:{v}" for v in range(1, 6)] + [
        f"Gen 5:{v}" for v in (1, 3, 4, 5)
    ]


def test_the_splits_are_whole_books_apart():
    assert not set(bible.TEST_BOOKS) & set(bible.VAL_BOOKS)
    assert {bible.split_of_book(b) for b in bible.BOOKS} == {"train", "val", "test"}
    assert all(b in bible.BOOKS for b in bible.TEST_BOOKS + bible.VAL_BOOKS)


@pytest.mark.data
def test_the_real_pairs_and_a_run_that_resumes_bit_identically(tmp_path):
    """On the real WEB and Reina-Valera modules: about 30,000 aligned pairs, fewer than 4%
    dropped, no book in two splits; the attention model on three books (a 300-token
    vocabulary), 6 steps straight or stopped at 3 and resumed: the same weights and logs."""
    from test_train import straight_and_resumed

    from neuralab import config

    require_dataset("bible-en-es")
    pairs, dropped = bible.aligned_pairs("web", "rv1909")
    assert 29000 < len(pairs) and sum(dropped.values()) < 0.04 * len(pairs)
    books = {
        split: {
            bible.parse_ref(ref)[0] for ref, _, _ in bible.translation_split("bible-en-es", split)
        }
        for split in ("train", "val", "test")
    }
    assert books["test"] == set(bible.TEST_BOOKS) and books["val"] == set(bible.VAL_BOOKS)
    assert len(books["train"]) == 66 - len(bible.TEST_BOOKS) - len(bible.VAL_BOOKS)
    cfg = config.load(
        "bible_en_es_attention",
        ["data.vocab_size=300", "data.max_tokens=24", "data.books=Obad,Jonah,Heb",
         "train.batch_size=8", "train.max_steps=6", "train.val_every=3", "train.log_every=1",
         "model.d_embed=16", "model.hidden=16", "model.attention=8"],
    )  # fmt: skip
    straight_and_resumed(tmp_path, cfg, stop_at=3)


def test_a_missing_bible_module_says_which_package_to_install(tmp_path, monkeypatch):
    """With no SWORD library anywhere, a translation run is refused before it starts, in one
    line naming the Debian package and the directory that would do instead."""
    from neuralab import config
    from neuralab.errors import UserError
    from neuralab.tasks import build_task

    monkeypatch.setattr(bible, "SYSTEM_SWORD", tmp_path / "nowhere")
    monkeypatch.setenv("NEURALAB_DATA", str(tmp_path))
    monkeypatch.setenv("NEURALAB_CACHE", str(tmp_path / "cache"))
    cfg = config.load("bible_en_es_gru")
    with pytest.raises(UserError, match="apt-get install sword-text-web") as err:
        build_task(cfg).check(cfg)
    assert "\n" not in str(err.value) and "DIR/sword" in str(err.value)
