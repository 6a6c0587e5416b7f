"""The byte-level BPE tokenizer (issue 22): the merges of a hand-worked example, the same
merges and ids as Hugging Face ``tokenizers`` trained on the same text, exact round trips
of any Unicode string, special tokens, and files that are not tokenizers."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuralab.errors import UserError
from neuralab.text.bpe import BYTE_RANK, PATTERNS, BPETokenizer

UNICODE = (
    "Señor, the naïve café's déjà vu costs 12,345.67 € — «vraiment?» 東京は晴れ。 Привет, мир! "
    "🙂👍🏽 tabs\tand  double  spaces\r\nnew lines\n\n\n and 'quotes' it's we'll they've I'd"
)


def hf_tokenizer(text: str, vocab: int, pattern: str):
    """Hugging Face's byte-level BPE trained on ``text`` with the same split and every byte
    in the alphabet: the oracle."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import Regex, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERNS[pattern]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([text], trainer)
    return tok


def gpt2_chars() -> dict[str, int]:
    """GPT-2's byte-to-character map, inverted: the character Hugging Face shows -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    rest = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + k): b for k, b in enumerate(rest)}


def test_the_textbook_example_merges_aa_then_ab_then_both():
    """ "aaabdaaabac" (Wikipedia's BPE example): aa (4 times) first; then aa·a and a·b tie
    at 2 and the tie goes to the pair of earlier tokens (a byte before a merged token), a·b;
    then aa·ab (2). So aaab is one token and the text is 5 tokens."""
    tok = BPETokenizer.train("aaabdaaabac", 256 + 3, pattern="gpt2")
    learnt = [tok.vocab[a] + b"+" + tok.vocab[b] for a, b in tok.merges]
    assert learnt == [b"a+a", b"a+b", b"aa+ab"]
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]


@pytest.mark.parametrize(("vocab", "pattern"), [(300, "gpt2"), (600, "gpt2"), (600, "gpt4")])
def test_merges_and_ids_equal_hugging_face_tokenizers(vocab, pattern):
    """Trained on the same text (mixed scripts, emoji, whitespace runs) with the same split
    (GPT-2's or GPT-4's regex), the merges are Hugging Face's, in the same order, and every
    text encodes to the same tokens: HF numbers the bytes in its character order, so a
    byte's id is its rank there."""
    rng = random.Random(0)
    words = ["".join(rng.choices("etaoinshrdlucmfwyp", k=rng.randint(2, 9))) for _ in range(300)]
    text = UNICODE * 3 + " ".join(rng.choices(words, weights=range(300, 0, -1), k=4000))
    ours = BPETokenizer.train(text, vocab, pattern=pattern)
    theirs = hf_tokenizer(text, vocab, pattern)
    chars = gpt2_chars()
    merges = json.loads(theirs.to_str())["model"]["merges"]
    expected = [
        tuple(bytes(chars[c] for c in part) for part in (m.split(" ") if isinstance(m, str) else m))
        for m in merges
    ]
    assert [(ours.vocab[a], ours.vocab[b]) for a, b in ours.merges] == expected
    assert len(ours.merges) == vocab - 256
    for sample in (text, UNICODE, "unseen words: zebra quokka 42"):
        ids = [BYTE_RANK[i] if i < 256 else i for i in ours.encode(sample)]
        assert ids == theirs.encode(sample).ids


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_decode_of_encode_is_the_text_for_any_unicode(text):
    assert TRAINED.decode(TRAINED.encode(text)) == text


TRAINED = BPETokenizer.train(UNICODE * 5, 256 + 120, special=["<|endoftext|>"])


def test_special_tokens_are_one_id_each_and_decode_back():
    """A special token in the text is its own id (above every merge); encode_ordinary
    spells it out as text; a slice of ids that cuts a character decodes to U+FFFD."""
    special = TRAINED.special["<|endoftext|>"]
    assert special == 256 + len(TRAINED.merges) == TRAINED.vocab_size - 1
    ids = TRAINED.encode("hi<|endoftext|>🙂")
    assert ids.count(special) == 1 and TRAINED.decode(ids) == "hi<|endoftext|>🙂"
    assert special not in TRAINED.encode_ordinary("hi<|endoftext|>")
    emoji = TRAINED.encode_ordinary("🙂")
    assert TRAINED.decode(emoji[:1]).endswith("\ufffd") or len(emoji) == 1
    with pytest.raises(UserError, match="token id 99999 is not in this tokenizer"):
        TRAINED.decode([99999])


def test_save_and_load_give_the_same_tokenizer(tmp_path):
    path = TRAINED.save(tmp_path / "t.json")
    again = BPETokenizer.load(path)
    assert again.merges == TRAINED.merges and again.special == TRAINED.special
    assert again.encode(UNICODE) == TRAINED.encode(UNICODE)


def test_bad_files_and_sizes_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no such tokenizer file"):
        BPETokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="is not a neuralab BPE tokenizer"):
        BPETokenizer.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(
        json.dumps({"format": "neuralab-bpe", "merges": [[1, 300]]})
    )
    with pytest.raises(UserError, match="merge 0 must be two ids below 256"):
        BPETokenizer.load(tmp_path / "other.json")
    with pytest.raises(UserError, match="vocab size must be at least 256"):
        BPETokenizer.train("abc", 200)
    with pytest.raises(UserError, match="pattern must be one of gpt2, gpt4"):
        BPETokenizer(pattern="words")
