"""Text data and language-model training: tokenizer, splits, batches, exact resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from neuralab import config
from neuralab.data.batches import RandomWindows, Streams
from neuralab.data.text import (
    CharTokenizer,
    eval_streams,
    eval_windows,
    load_token_splits,
    read_text_file,
    split_bounds,
)
from neuralab.errors import UserError
from neuralab.train import checkpoint, fit, new_run_dir
from neuralab.train import test as run_test

WORDS = "to be or not that is the question whether tis nobler in mind suffer".split()


def _text(n_words: int = 1500, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    while n_words > 0:
        k = rng.randint(3, 9)
        lines.append(" ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + ".")
        n_words -= k
    return "\n".join(lines) + "\n"


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(_text(), encoding="utf-8")
    return path


# ---- tokenizer and files ------------------------------------------------------------------


def test_tokenizer_round_trip_and_json(tmp_path):
    """Ids follow the sorted characters (nanoGPT's convention), decode inverts encode, and the
    JSON file restores the exact vocabulary, so sampling needs no data."""
    text = "hello, world\nÄé"
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text)) and tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert ids.dtype == torch.int64 and tok.decode(ids) == text
    tok.save(tmp_path / "vocab.json")
    assert CharTokenizer.load(tmp_path / "vocab.json").chars == tok.chars


def test_tokenizer_errors(tmp_path):
    """Unknown characters, a repeated character, a missing or malformed vocabulary file are
    one-line UserErrors."""
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(UserError, match="not in this model's vocabulary: 'xz'"):
        tok.encode("axz")
    with pytest.raises(UserError, match="repeat"):
        CharTokenizer(["a", "a"])
    with pytest.raises(UserError, match="missing"):
        CharTokenizer.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text(json.dumps({"chars": "abc"}))
    with pytest.raises(UserError, match="not a vocabulary file"):
        CharTokenizer.load(tmp_path / "bad.json")


def test_read_text_file_errors(tmp_path):
    """A missing file, a directory, non-UTF-8 bytes and a too-short text are UserErrors."""
    with pytest.raises(UserError, match="does not exist"):
        read_text_file(tmp_path / "nope.txt")
    with pytest.raises(UserError, match="is a directory"):
        read_text_file(tmp_path)
    (tmp_path / "bin.txt").write_bytes(b"abc" * 50 + b"\xff\xfe")
    with pytest.raises(UserError, match="not UTF-8 text .byte 150 is 0xff"):
        read_text_file(tmp_path / "bin.txt")
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(UserError, match="at least 100"):
        read_text_file(tmp_path / "short.txt")


# ---- splits and batches -------------------------------------------------------------------


def test_splits_are_contiguous_disjoint_and_test_is_fixed():
    """Train, val, test tile the text in order; the test split is the last 5% whatever
    val_fraction is, so test figures stay comparable between runs."""
    n = 1_115_394
    b = split_bounds(n, 0.05)
    assert b["train"][0] == 0 and b["train"][1] == b["val"][0] and b["val"][1] == b["test"][0]
    assert b["test"][1] == n and b["test"][1] - b["test"][0] == 55770
    assert b["train"][1] == 1_003_854  # nanoGPT's 90% train split, exactly
    assert split_bounds(n, 0.1)["test"] == b["test"]
    with pytest.raises(UserError, match="val_fraction"):
        split_bounds(n, 0.96)


def test_data_path_splits_and_vocab(text_file):
    """data.path reads any UTF-8 file; the splits concatenate back to the whole text."""
    cfg = config.DataConfig(path=str(text_file), val_fraction=0.1)
    tok, splits = load_token_splits(cfg)
    text = text_file.read_text()
    assert tok.decode(torch.cat([splits["train"], splits["val"], splits["test"]])) == text


def test_eval_windows_and_streams_cover_every_target_once():
    """Each token after the first is a target exactly once (up to a dropped remainder), and
    every target is the token following its input."""
    tokens = torch.arange(1000)
    x, y = eval_windows(tokens, 64)
    assert x.shape == (15, 64) and torch.equal(y, x + 1)
    assert torch.equal(y.flatten(), torch.arange(1, 961))
    xs, ys = eval_streams(tokens, 16)
    assert xs.shape == (16, 62) and torch.equal(ys, xs + 1)
    assert len(set(ys.flatten().tolist())) == ys.numel()


def test_random_windows_are_a_function_of_the_step():
    """Batch s is the same every time it is asked for (exact resume needs nothing but the
    step), differs between steps, and y is x shifted by one token."""
    tokens = torch.arange(5000)
    batches = RandomWindows(tokens, batch_size=8, block_size=16, seed=3)
    x, y, fresh = batches.get(7)
    assert x.shape == (8, 16) and torch.equal(y, x + 1) and not fresh
    again = RandomWindows(tokens, 8, 16, seed=3).get(7)
    assert torch.equal(again.x, x)
    assert not torch.equal(batches.get(8).x, x)


def test_streams_continue_row_by_row():
    """Row b of batch k+1 continues row b of batch k in the text (so a carried hidden state
    reads on where it stopped); a pass starts fresh and then wraps around."""
    tokens = torch.arange(1001)
    streams = Streams(tokens, batch_size=4, block_size=10)
    assert streams.steps_per_epoch == 25
    first, second = streams.get(0), streams.get(1)
    assert first.fresh and not second.fresh
    assert torch.equal(second.x[:, 0], first.x[:, -1] + 1)
    assert torch.equal(first.x[:, 0], torch.tensor([0, 250, 500, 750]))
    assert torch.equal(streams.get(25).x, first.x) and streams.get(25).fresh
    with pytest.raises(UserError, match="too few"):
        Streams(torch.arange(50), batch_size=4, block_size=16)


# ---- training -----------------------------------------------------------------------------

GPT = ["model.name=gpt", "model.n_layer=1", "model.d_model=32", "model.n_heads=2"]
LSTM = ["model.name=lstm", "model.n_layer=2", "model.d_hidden=32", "data.batching=streams"]


def _cfg(text_file, model, extra=()):
    return config.load(
        None,
        [
            f"data.path={text_file}",
            "model.block_size=16",
            "model.dropout=0.1",
            "train.batch_size=8",
            "train.log_every=5",
            "train.val_every=10",
            "train.monitor=val/loss",
            *model,
            *extra,
        ],
    )


@pytest.mark.parametrize(
    "model",
    [GPT, [*GPT, "train.precision=bf16"], LSTM],
    ids=["gpt-windows", "gpt-bf16-autocast", "lstm-streams"],
)
def test_text_resume_is_bit_identical(tmp_path, text_file, model):
    """30 steps straight == 13 steps, stop, resume, 17 steps: identical parameters and
    optimizer state. For the LSTM this includes the hidden state carried across the stop
    (stream batches), and dropout's RNG for all; bf16 autocast is deterministic too."""

    def interrupt_at(step):
        def cb(record):
            if record["step"] == step and "train/loss" in record:
                import os
                import signal

                os.kill(os.getpid(), signal.SIGINT)

        return cb

    cfg = _cfg(text_file, model, ["train.max_steps=30", "train.log_every=1"])
    straight = new_run_dir(tmp_path / "a", cfg)
    fit(cfg, straight, progress=False)
    stopped = new_run_dir(tmp_path / "b", cfg)
    part = fit(cfg, stopped, progress=False, callbacks=[interrupt_at(13)])
    assert part["status"] == "interrupted" and part["train/steps"] == 13
    saved = checkpoint.read(stopped, "last").state["task"]
    if "lstm" in model:
        h, c = saved["state"]
        assert h.shape == (2, 8, 32) and c.shape == (2, 8, 32)
    fit(cfg, stopped, resume=True, progress=False)
    a, b = checkpoint.read(straight, "last"), checkpoint.read(stopped, "last")
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
    sa, sb = a.state["optimizer"]["state"], b.state["optimizer"]["state"]
    for i in sa:
        assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"])


@pytest.mark.parametrize("model", [GPT, LSTM], ids=["gpt", "lstm"])
def test_text_run_learns_and_reports(tmp_path, text_file, model):
    """A short run on a small text beats the uniform model's ln(V) by a wide margin and
    reports val/test loss, bits per character (= loss / ln 2), perplexity and tokens/s."""
    cfg = _cfg(text_file, model, ["train.max_steps=60", "optim.lr=1e-2"])
    run_dir = new_run_dir(tmp_path / "run", cfg)
    summary = fit(cfg, run_dir, progress=False)
    vocab = CharTokenizer.load(run_dir / "vocab.json").vocab_size
    assert summary["val/loss"] < 0.8 * torch.log(torch.tensor(float(vocab))).item()
    assert summary["train/tokens_per_s"] > 0 and summary["train/tokens"] > 0
    result = run_test(run_dir)
    assert result["test/bpc"] == pytest.approx(result["test/loss"] / 0.6931471805599453)
    assert result["test/ppl"] == pytest.approx(torch.tensor(result["test/loss"]).exp().item())
    saved = json.loads((run_dir / "results.json").read_text())
    assert {"val/loss", "test/loss", "test/bpc", "train/tokens_per_s"} <= set(saved)


def test_streams_need_a_recurrent_model(tmp_path, text_file):
    """Stream batches carry a hidden state: asking for them with a GPT is a UserError."""
    cfg = _cfg(text_file, GPT, ["data.batching=streams"])
    with pytest.raises(UserError, match="does not have; use data.batching=windows"):
        fit(cfg, new_run_dir(tmp_path / "run", cfg), progress=False)


# ---- BPE tokens (data.tokenizer = "bpe") -----------------------------------------------------


def test_bpe_splits_learn_merges_from_the_train_split_only(text_file):
    """The splits are cut by characters, as for characters; the merges are those learnt from
    the train part alone, so nothing of val or test shapes the vocabulary; the splits'
    tokens decode back to the text."""
    from neuralab.data.text import BPETextTokenizer
    from neuralab.text.bpe import BPETokenizer

    cfg = config.load("shakespeare_gpt", [f"data.path={text_file}", "data.tokenizer=bpe",
                                          "data.vocab_size=300"]).data  # fmt: skip
    tokenizer, splits = load_token_splits(cfg)
    text = text_file.read_text(encoding="utf-8")
    bounds = split_bounds(len(text), cfg.val_fraction)
    assert isinstance(tokenizer, BPETextTokenizer) and tokenizer.vocab_size == 300
    assert tokenizer.bpe.merges == BPETokenizer.train(text[: bounds["train"][1]], 300).merges
    assert "".join(tokenizer.decode(splits[s]) for s in ("train", "val", "test")) == text
    assert len(splits["train"]) < 0.5 * bounds["train"][1]  # a token is several characters


def test_bpe_text_streams_whole_characters():
    """A character whose UTF-8 bytes span two tokens is written once, when complete."""
    from neuralab.data.text import BPETextTokenizer
    from neuralab.text.bpe import BPETokenizer

    tokenizer = BPETextTokenizer(BPETokenizer({}))  # bytes only: "é" is two tokens
    ids = tokenizer.encode("né!")
    assert len(ids) == 4
    assert list(tokenizer.decode_stream(ids.split(1))) == ["n", "é", "!"]


def test_a_bpe_language_model_reports_bits_per_character_and_samples(tmp_path, text_file):
    """Bits per character are the loss per token times the test split's tokens per
    character over ln 2; the run keeps tokenizer.json, and `sample` writes the run
    tokenizer's decoding of the tokens the model generates under the seed; it resumes
    bit-identically; the character-cell probes refuse it."""
    from test_train import straight_and_resumed

    from neuralab.data.text import load_run_tokenizer
    from neuralab.errors import UserError
    from neuralab.probe.lstm_cells import lstm_run
    from neuralab.train import load_model, sample

    cfg = _cfg(text_file, LSTM, ["train.max_steps=20", "data.tokenizer=bpe",
                                 "data.vocab_size=300", "train.log_every=1"])  # fmt: skip
    run_dir = new_run_dir(tmp_path / "run", cfg)
    fit(cfg, run_dir, progress=False)
    assert (run_dir / "tokenizer.json").is_file() and not (run_dir / "vocab.json").exists()
    result = run_test(run_dir)
    tokenizer, splits = load_token_splits(cfg.data, load_run_tokenizer(run_dir))
    test = splits["test"]
    per_char = len(test) / len(tokenizer.decode(test))
    assert result["test/bpc"] == pytest.approx(result["test/loss"] * per_char / 0.6931471805599453)
    prompt = tokenizer.encode("To be")[None, :]
    seeded = torch.Generator().manual_seed(1)
    tokens = load_model(run_dir).generate(prompt, 10, 0.8, generator=seeded)[0, prompt.shape[1] :]
    assert len(tokens) == 10 and sample(run_dir, "To be", 10, seed=1) == tokenizer.decode(tokens)
    with pytest.raises(UserError, match="reads BPE tokens"):
        lstm_run(run_dir, "to be or not to be")
    straight_and_resumed(tmp_path / "resume", cfg, stop_at=7)


def test_a_finished_language_model_is_offered_the_shakespeare_prompt_only_on_shakespeare():
    """`neuralab train`'s closing hint: `--prompt 'ROMEO:'` for tiny shakespeare only; a model
    of the user's own text is offered a plain `neuralab sample`."""
    from neuralab.cli.train import next_step

    shakespeare = config.load("shakespeare_gpt_cpu", [])
    assert "--prompt 'ROMEO:'" in next_step(shakespeare, Path("runs/a"))[1]
    own = config.load("shakespeare_gpt_cpu", ["data.path=notes.txt"])
    assert next_step(own, Path("runs/b")) == ("sample", "neuralab sample runs/b --tokens 500")
