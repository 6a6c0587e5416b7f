"""Machine translation (issue 22) end to end through the CLI on the real Bible modules
(Debian's sword-text-web and sword-text-sparv), on three books: train a shortened preset,
test, translate sentences, picture the attention, and the mistakes a user can make."""

from __future__ import annotations

import json

import pytest
from conftest import require_dataset
from test_cli import assert_user_error, neuralab

pytestmark = pytest.mark.data
SMALL = ["data.vocab_size=300", "data.max_tokens=24", "data.books=Obad,Jonah,Heb",
         "train.batch_size=8", "train.max_steps=4", "train.val_every=2"]  # fmt: skip
GENESIS = "In the beginning God created the heavens and the earth."


def test_a_transformer_translates_and_shows_its_alignment(tmp_path):
    """`neuralab train bible_en_es_transformer` (shortened) prints sacreBLEU's BLEU and chrF
    with its signature, beside the source copied; `translate` prints one line per sentence,
    warns when it cuts a long one and refuses an empty one; `probe attention --source`
    draws the alignment and names, for each written token, its most attended source token."""
    require_dataset("bible-en-es")
    result = json.loads(
        neuralab("train", "bible_en_es_transformer", *SMALL, "model.d_model=16",
                 "model.n_layers=1", "--run-dir", "r", "--json", cwd=tmp_path).stdout
    )  # fmt: skip
    for key in ("test/bleu", "test/chrf", "test/greedy_bleu", "test/copy_bleu"):
        assert 0 <= result[key] <= 100
    assert result["test/books"] == ["Heb"] and result["test/examples"] > 250
    assert result["test/bleu_signature"].startswith("nrefs:1|case:mixed")
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert "train/wall_s" in saved and saved["test/chrf"] == pytest.approx(result["test/chrf"])
    printed = neuralab("test", "r", cwd=tmp_path).stdout
    assert "test verses (Heb), scored by sacreBLEU" in printed and "source copied" in printed
    examples = json.loads((tmp_path / "r" / "test_translations.json").read_text())
    assert examples[0]["ref"] == "Heb 1:1" and {"greedy", "beam4"} <= set(examples[0])

    proc = neuralab("translate", "r", GENESIS, "Jesus wept.", "--beam", "2", cwd=tmp_path)
    assert len(proc.stdout.splitlines()) == 2
    long = " ".join([GENESIS] * 4)
    proc = neuralab("translate", "r", long, "--json", cwd=tmp_path)
    (item,) = json.loads(proc.stdout)["translations"]
    assert item["cut"] and "cut to its first 24 tokens" in proc.stderr
    assert_user_error(neuralab("translate", "r", " ", cwd=tmp_path, check=False),
                      "a text to translate is empty")  # fmt: skip
    assert_user_error(neuralab("translate", "r", GENESIS, "--beam", "0", cwd=tmp_path,
                               check=False), "the beam must be >= 1")  # fmt: skip

    probe = json.loads(
        neuralab("probe", "attention", "r", "--source", GENESIS, "--json", cwd=tmp_path).stdout
    )
    assert (tmp_path / probe["png"]).is_file() or (tmp_path / "r" / "plots").is_dir()
    assert all(len(pair) == 2 for pair in probe["alignment"])


def test_a_gru_without_attention_has_no_alignment_to_show(tmp_path):
    require_dataset("bible-en-es")
    neuralab("train", "bible_en_es_gru", *SMALL, "train.max_steps=2", "model.hidden=8",
             "model.d_embed=8", "--run-dir", "g", cwd=tmp_path)  # fmt: skip
    assert neuralab("translate", "g", GENESIS, "--beam", "1", cwd=tmp_path).stdout.strip()
    proc = neuralab("probe", "attention", "g", "--source", GENESIS, cwd=tmp_path, check=False)
    assert_user_error(proc, "reads the source as one vector")
    proc = neuralab("probe", "attention", "g", cwd=tmp_path, check=False)
    assert_user_error(proc, "reads the sentence to look at from --source")


def test_translation_mistakes_are_one_line_errors(tmp_path):
    """A translator on images, a book that does not exist, a book slice without test books,
    translate on a run that is not a translation run."""
    proc = neuralab("train", "bible_en_es_gru", "data.name=digits", cwd=tmp_path, check=False)
    assert_user_error(proc, "translation needs parallel texts")
    require_dataset("bible-en-es")
    proc = neuralab("train", "bible_en_es_gru", "data.books=Gen,Tobit", cwd=tmp_path, check=False)
    assert_user_error(proc, "unknown books Tobit")
    proc = neuralab("train", "bible_en_es_gru", "data.books=Gen,Ruth", "--run-dir", "x",
                    cwd=tmp_path, check=False)  # fmt: skip
    assert_user_error(proc, "data.books leaves no test pairs: include one of Judg")
    neuralab("train", "digits_cnn", "train.max_steps=2", "--run-dir", "d", cwd=tmp_path)
    assert_user_error(neuralab("translate", "d", GENESIS, cwd=tmp_path, check=False),
                      "takes runs of translators")  # fmt: skip
