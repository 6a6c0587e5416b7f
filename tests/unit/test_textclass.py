"""Text classification (issue 22): macro-F1 against scikit-learn, padding that never changes
a prediction, attention that gives padding no weight, the Bible reader's cleaning, and the
kind of run training and resuming on the real corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import require_dataset
from sklearn.metrics import f1_score

from neuralab.data import bible
from neuralab.models import create_model
from neuralab.models.attention import MultiHeadSelfAttention
from neuralab.tasks.base import confusion_matrix
from neuralab.tasks.textclass import encode_texts, macro_f1
from neuralab.text.bpe import BPETokenizer


def test_macro_f1_equals_scikit_learns():
    """On predictions that miss a class entirely and predict one never present."""
    torch.manual_seed(0)
    y = torch.randint(0, 5, (300,))
    y[y == 4] = 3  # class 4 never present
    p = torch.where(torch.rand(300) < 0.6, y, torch.randint(0, 5, (300,)))
    p[p == 2] = 1  # class 2 never predicted
    expected = f1_score(y, p, average="macro", labels=range(5), zero_division=0)
    assert macro_f1(confusion_matrix(p, y, 5)) == pytest.approx(expected, abs=1e-12)


def test_the_best_checkpoint_is_the_highest_macro_f1_or_accuracy():
    from neuralab.tasks.textclass import TextClassTask

    task = TextClassTask(("a", "b"))
    assert task.higher_is_better("val/macro_f1") and task.higher_is_better("val/acc")
    assert not task.higher_is_better("val/loss")


def test_texts_are_padded_to_the_longest_and_cut_at_max_tokens():
    tok = BPETokenizer.train("a bb ccc dddd " * 20, 270, special=["<pad>", "<cls>"])
    ids, cut = encode_texts(tok, ["a", "a bb ccc dddd a bb ccc dddd", ""], 5)
    pad = tok.special["<pad>"]
    assert ids.shape == (3, 5) and cut == 1
    assert ids[0, 0] != pad and (ids[0, 1:] == pad).all() and (ids[2] == pad).all()
    assert tok.decode(ids[1].tolist()).startswith("a bb")


@pytest.mark.parametrize("name", ["text_cnn", "text_bilstm", "text_transformer", "text_gpt"])
def test_padding_never_changes_a_prediction(name):
    """The same texts padded to 12 or to 30 tokens get the same logits (eval mode): the CNN
    pools only windows that start on a real token, the LSTM is packed, the Transformer's
    padding gets no attention, the GPT's tokens never read later ones and it pools the real
    ones only."""
    torch.manual_seed(0)
    model = create_model(name, vocab_size=50, num_classes=4, pad_id=0, cls_id=1, max_tokens=30)
    model.eval()
    ids = torch.randint(2, 50, (3, 12))
    ids[0, 7:] = 0
    ids[1, 2:] = 0
    longer = torch.cat([ids, torch.zeros(3, 18, dtype=torch.int64)], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(longer), model(ids), rtol=1e-5, atol=1e-5)


def test_attention_gives_padding_no_weight_and_sdpa_agrees():
    """With a padding mask, every query's weights on padded keys are exactly 0 and each row
    still sums to 1; PyTorch's fused attention gives the manual path's output."""
    torch.manual_seed(0)
    manual = MultiHeadSelfAttention(16, 4, causal=False, attn_impl="manual").eval()
    fused = MultiHeadSelfAttention(16, 4, causal=False, attn_impl="sdpa").eval()
    fused.load_state_dict(manual.state_dict())
    x = torch.randn(2, 6, 16)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    y, weights = manual(x, need_weights=True, keep=keep)
    assert (weights[0, :, :, 4:] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 6))
    torch.testing.assert_close(fused(x, keep=keep), y, rtol=1e-5, atol=1e-6)


def test_osis_markup_is_cleaned_to_the_words():
    """Footnotes and titles dropped without gluing words, tags removed, entities decoded,
    pilcrows and spaces before punctuation gone."""
    markup = (
        '<title type="psalm">A Psalm.</title><w lemma="x">God</w><note placement="foot">1:1 '
        'Elohim.</note><w>created</w> <l level="1"/>light &amp; dark <w>earth</w> . ¶ Amen'
    )
    assert bible.clean_osis(markup) == "God created light & dark earth. Amen"


def test_the_genres_cover_the_66_books_once():
    assert len(bible.BOOKS) == 66 and sorted(bible.GENRE_OF) == sorted(bible.BOOKS)
    assert len(bible.GENRES) == 8


def test_a_second_translation_trains_only_where_the_chapters_agree(monkeypatch):
    """`data.translations=web,kjv`: train holds both translations' train-chapter verses, val
    and test stay WEB's, and a KJV chapter whose verse count differs from the WEB's (a verse
    the WEB leaves out) trains nothing; a translation outside web/kjv is a UserError."""
    from neuralab.config import DataConfig
    from neuralab.data.text import labelled_split
    from neuralab.errors import UserError

    web = {"Gen 1:1": "w1", "Gen 1:2": "w2", "Acts 8:36": "w3", "Gen 10:1": "test"}
    kjv = {"Gen 1:1": "k1", "Gen 1:2": "k2", "Acts 8:36": "k3", "Acts 8:37": "k4"}
    kjv["Gen 10:1"] = "kjv test"
    monkeypatch.setattr(bible, "read_verses", lambda t, d=None: web if t == "web" else kjv)
    both = DataConfig(name="bible-genre", translations=("web", "kjv"))
    texts, labels = labelled_split(both, "train")
    assert texts == ["w1", "w2", "w3", "k1", "k2"] and labels == [0, 0, 1, 0, 0]
    assert labelled_split(both, "test")[0] == ["test"]
    assert labelled_split(DataConfig(name="bible-genre"), "train")[0] == ["w1", "w2", "w3"]
    with pytest.raises(UserError, match="data.translations"):
        labelled_split(DataConfig(name="bible-genre", translations=("rv1909",)), "train")
    with pytest.raises(UserError, match="bible-genre's option"):
        labelled_split(DataConfig(name="fortunes", translations=("kjv",)), "train")


@pytest.mark.data
def test_bible_genre_runs_resume_bit_identically(tmp_path, monkeypatch):
    """The CNN on the real corpus (a 300-token vocabulary), 6 steps straight or stopped at 3
    and resumed: the same weights and logs; the tokenizer is learnt once and kept."""
    from test_train import straight_and_resumed

    from neuralab import config

    require_dataset("bible-genre")
    cfg = config.load(
        "bible_genre_cnn",
        ["data.vocab_size=300", "data.max_tokens=24", "train.batch_size=16",
         "train.max_steps=6", "train.val_every=3", "train.log_every=1", "model.filters=8"],
    )  # fmt: skip
    straight_and_resumed(tmp_path, cfg, stop_at=3)


def test_balanced_class_weights_are_scikit_learns_and_weigh_the_loss():
    """N / (C · n_c), as sklearn's compute_class_weight("balanced"); the weighted loss is
    torch's weighted cross-entropy; a kind of run that does not weigh classes refuses it."""
    from sklearn.utils.class_weight import compute_class_weight

    from neuralab import config
    from neuralab.errors import UserError
    from neuralab.tasks import build_task
    from neuralab.tasks.textclass import TextClassTask

    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    task = TextClassTask(("a", "b", "c"))
    task.weigh_classes(config.load("bible_genre_cnn", ["train.class_weights=balanced"]), y)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y.numpy())
    torch.testing.assert_close(task.weight, torch.tensor(expected, dtype=torch.float32))
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    model = lambda x: logits  # noqa: E731
    loss, _ = task.loss(model, torch.ones(6, 2, dtype=torch.long), labels)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels, task.weight))
    cfg = config.load("moving_fashion_single", ["train.class_weights=balanced"])
    with pytest.raises(UserError, match="train.class_weights=balanced is for image and text"):
        build_task(cfg).check(cfg)


def test_a_language_model_reads_a_labelled_sets_texts_by_split(monkeypatch):
    """`data.name=bible-genre` in a language-model run: each split is that split's texts, a
    line each, labels unused (so a test text never trains it), and its BPE tokenizer holds
    the classifier's <pad> and <cls>, so a classifier can start from the model."""
    from neuralab.config import DataConfig
    from neuralab.data import text

    fake = {"train": (["in the beginning", "god created"], [0, 1]),
            "val": (["the heavens"], [0]), "test": (["and the earth"], [1])}  # fmt: skip
    monkeypatch.setitem(text.LABELLED_TEXTS, "bible-genre", lambda split, _=None, **_o: fake[split])
    cfg = DataConfig(name="bible-genre", tokenizer="bpe", vocab_size=270)
    tokenizer, splits = text.load_token_splits(cfg)
    assert tokenizer.decode(splits["train"]) == "in the beginning\ngod created"
    assert tokenizer.decode(splits["val"]) == "the heavens"
    assert tokenizer.decode(splits["test"]) == "and the earth"
    assert set(tokenizer.bpe.special) == {"<pad>", "<cls>"} and tokenizer.vocab_size == 270
