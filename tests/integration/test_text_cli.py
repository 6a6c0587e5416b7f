"""Language models from the command line: train on any text file, test, sample; and a
short real run on tiny shakespeare (marked ``data``)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import pytest
from conftest import require_dataset
from test_cli import assert_user_error, neuralab

from neuralab import config
from neuralab.data import fetch, locate
from neuralab.train import fit, new_run_dir, sample
from neuralab.train import test as run_test

TINY_GPT = [
    "model.n_layer=1",
    "model.d_model=32",
    "model.n_heads=2",
    "model.block_size=32",
    "train.max_steps=40",
    "train.val_every=20",
    "train.log_every=10",
    "optim.lr=1e-2",
]
TEXT = "".join(f"{i}: ROMEO. Wherefore art thou, Romeo? JULIET. Here, love.\n" for i in range(60))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A tiny GPT trained on a text file through ``data.path``, with the shakespeare preset."""
    cwd = tmp_path_factory.mktemp("text")
    (cwd / "novel.txt").write_text(TEXT, encoding="utf-8")
    proc = neuralab(
        "train",
        "shakespeare_gpt_cpu",
        "data.path=novel.txt",
        *TINY_GPT,
        "--run-dir",
        "runs/g",
        "--json",
        "--no-progress",
        cwd=cwd,
    )
    return cwd, json.loads(proc.stdout)


def test_train_on_any_text_file(text_run):
    """`train CONFIG data.path=FILE` trains on that file, tests the best checkpoint and
    prints val/test loss, bits per character and tokens/s as JSON."""
    cwd, result = text_run
    assert result["status"] == "finished" and result["train/steps"] == 40
    assert result["test/bpc"] > 0 and result["train/tokens_per_s"] > 0
    assert result["val/loss"] < 2.5  # ln(vocab) = ln(38) = 3.64 at the start
    assert (cwd / "runs/g/vocab.json").exists()


def test_test_command_on_a_text_run(text_run):
    """`neuralab test RUN --json` re-measures the same test loss, bpc and perplexity."""
    cwd, result = text_run
    proc = neuralab("test", "runs/g", "--json", cwd=cwd)
    again = json.loads(proc.stdout)
    assert again["test/loss"] == pytest.approx(result["test/loss"], rel=1e-6)
    assert {"test/bpc", "test/ppl", "test/tokens"} <= set(again)


def test_sample_is_deterministic_with_a_seed_and_streams(text_run):
    """The same seed writes the same text; another seed another text; the CLI writes the
    prompt and then the sampled characters; the Python API agrees with the CLI."""
    cwd, _ = text_run
    args = ["sample", "runs/g", "--prompt", "ROMEO", "--tokens", "60", "--top-k", "5"]
    a = neuralab(*args, "--seed", "1", cwd=cwd).stdout
    b = neuralab(*args, "--seed", "1", cwd=cwd).stdout
    c = neuralab(*args, "--seed", "2", cwd=cwd).stdout
    assert a == b != c
    assert a.startswith("ROMEO") and len(a) == len("ROMEO") + 60 + 1  # and a final newline
    api = sample(cwd / "runs/g", "ROMEO", 60, top_k=5, seed=1)
    assert a == "ROMEO" + api + "\n"
    as_json = json.loads(neuralab(*args, "--seed", "1", "--json", cwd=cwd).stdout)
    assert as_json["text"] == api and as_json["characters_per_second"] > 0
    speed = neuralab(*args, cwd=cwd).stderr.strip()
    assert re.fullmatch(r"neuralab: 60 characters in [0-9.]+ s \([0-9,]+/s\)", speed), speed


def test_text_user_errors(text_run):
    """A prompt outside the vocabulary, a negative thread count, a missing text file, an
    image model on text, stream batches for a GPT: one line, exit 2, no run directory left
    behind."""
    cwd, _ = text_run
    proc = neuralab("sample", "runs/g", "--prompt", "Zebra~", cwd=cwd, check=False)
    assert_user_error(proc, "not in this model's vocabulary")
    proc = neuralab("sample", "runs/g", "--threads", "-1", cwd=cwd, check=False)
    assert_user_error(proc, "--threads must be >= 0")
    proc = neuralab("train", "shakespeare_gpt_cpu", "data.path=missing.txt", cwd=cwd, check=False)
    assert_user_error(proc, "text file missing.txt does not exist")
    proc = neuralab(
        "train", "shakespeare_gpt_cpu", "data.path=novel.txt", "model.name=cnn", "--run-dir",
        "runs/bad", cwd=cwd, check=False,
    )  # fmt: skip
    assert_user_error(proc, "model 'cnn' cannot learn from text")
    assert not (cwd / "runs/bad").exists()


@pytest.mark.data
def test_tinyshakespeare_short_gpt_run(tmp_path):
    """300 steps of the classic CPU GPT on the real tiny shakespeare: the splits have the
    documented sizes (train = nanoGPT's 1,003,854 characters), the vocabulary is the text's
    65 characters, and validation loss falls from ln 65 = 4.17 to below 2.6."""
    require_dataset("tinyshakespeare")
    cfg = config.load("shakespeare_gpt_cpu", ["train.max_steps=300", "train.val_every=300"])
    run_dir = new_run_dir(tmp_path / "run", cfg)
    summary = fit(cfg, run_dir, progress=False)
    assert summary["train/tokens"] == 1_003_854 and summary["val/tokens"] == 55_770
    assert json.loads((run_dir / "vocab.json").read_text())["chars"][:2] == ["\n", " "]
    assert len(json.loads((run_dir / "vocab.json").read_text())["chars"]) == 65
    assert summary["val/loss"] < 2.6, summary["val/loss"]
    assert run_test(run_dir)["test/tokens"] == 55_744


@pytest.mark.data
def test_fetch_tinyshakespeare_checks_sha256(tmp_path):
    """`fetch` downloads the canonical file name from a (file://) mirror and verifies the
    published sha256; the shared copy is byte-identical to karpathy/char-rnn's."""
    require_dataset("tinyshakespeare")
    source = locate("tinyshakespeare") / "input.txt"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert digest == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(source, mirror / "input.txt")
    got = fetch("tinyshakespeare", tmp_path / "data", urls=[mirror.as_uri()])
    assert (got / "input.txt").read_bytes() == source.read_bytes()


def test_probe_attention_from_the_cli(text_run):
    """`neuralab probe attention RUN --text T --json` prints one object whose maps are
    distributions, and writes one PNG per layer into the run."""
    cwd, _ = text_run
    out = json.loads(
        neuralab("probe", "attention", "runs/g", "--text", "ROMEO. Here", "--json", cwd=cwd).stdout
    )
    assert out["layers"] == 1 and out["row_sum_max_error"] < 1e-5
    assert (cwd / "runs/g/plots/attention_layer0.png").exists()
    proc = neuralab("probe", "lstm", "runs/g", "--text", "ROMEO. Here", cwd=cwd, check=False)
    assert_user_error(proc, "needs an lstm run")
