"""`neuralab tokenizer` (issue 22) end to end: train on a text file, encode, decode, and
the mistakes a user can make (each one line, exit status 2)."""

from __future__ import annotations

import json

from test_cli import assert_user_error, neuralab

TEXT = "In the beginning God created the heavens and the earth. " * 40 + "Señor, 🙂 café\n"


def test_train_encode_and_decode_round_trip(tmp_path):
    """A tokenizer trained with a special token writes its JSON; encode --json gives ids
    and their pieces (a byte of a character that spans several shows as U+FFFD), and
    decode of those ids is the text again."""
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    trained = json.loads(
        neuralab(
            "tokenizer",
            "train",
            "t.txt",
            "--vocab",
            "300",
            "--out",
            "tok.json",
            "--special",
            "<|endoftext|>",
            "--json",
            cwd=tmp_path,
        ).stdout  # fmt: skip
    )
    assert trained["vocab_size"] == 300 and trained["merges"] == 300 - 256 - 1
    assert trained["special"] == {"<|endoftext|>": 299} and trained["text_tokens"] < len(TEXT)
    text = "the earth<|endoftext|>café 🙂"
    found = json.loads(neuralab("tokenizer", "encode", "tok.json", text, "--json",
                                cwd=tmp_path).stdout)  # fmt: skip
    assert 299 in found["ids"] and found["pieces"][found["ids"].index(299)] == "<|endoftext|>"
    assert "".join(found["pieces"]).startswith("the earth<|endoftext|>café ")  # 🙂: 4 bytes
    ids = [str(i) for i in found["ids"]]
    assert neuralab("tokenizer", "decode", "tok.json", *ids, cwd=tmp_path).stdout == text + "\n"
    plain = neuralab("tokenizer", "train", "t.txt", "--vocab", "280", "--out", "b.json",
                     cwd=tmp_path).stdout  # fmt: skip
    assert "wrote b.json: 280 tokens (24 merges, gpt4 split)" in plain


def test_mistakes_are_one_line_errors(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "not.json").write_text("[1, 2]")
    cases = [
        (("train", "missing.txt"), "no such text file: missing.txt"),
        (("train", "latin1.txt"), "latin1.txt is not UTF-8 text"),
        (("train", "empty.txt"), "empty.txt is empty"),
        (("train", "t.txt", "--vocab", "100"), "vocab size must be at least 256"),
        (("encode", "not.json", "hi"), "not.json is not a neuralab BPE tokenizer"),
        (("decode", "nothing.json", "1"), "no such tokenizer file: nothing.json"),
    ]
    for args, message in cases:
        assert_user_error(neuralab("tokenizer", *args, cwd=tmp_path, check=False), message)
