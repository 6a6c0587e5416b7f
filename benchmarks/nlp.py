"""Language beyond characters (issue 22): the BPE tokenizer against Hugging Face's, the
text classifiers against TF-IDF + logistic regression, and the translators, one JSON object
per line.

- ``tokenizer``: our byte-level BPE and ``tokenizers``' trained on the same text (the WEB
  Bible's train verses) with the same split: training seconds, whether the merges are
  equal, and encode throughput (MB/s) of the whole text, single-threaded, median of 3.
- ``baseline``: TF-IDF of word unigrams and bigrams + logistic regression on bible-genre
  and on fortunes, and on bible-genre trained on the WEB's and the KJV's verses.
- one object per classifier preset (``cnn``, ``bilstm``, ``transformer``, ``gpt`` on
  bible-genre, ``fortunes_cnn``): test accuracy, macro-F1, majority class, training time.
- ``pretrained_gpt``: ``bible_genre_lm`` (a GPT language model of the train and val verses),
  then ``bible_genre_gpt`` fine-tuned from it; ``gpt`` is the same classifier from scratch.
- one object per translation preset (``en_es_gru``, ``en_es_attention``,
  ``en_es_transformer``): sacreBLEU BLEU and chrF on the test books (beam 4 and greedy)
  beside the source copied, target tokens per second, training time.

Targets (2 CPU cores): every neural model beats TF-IDF + LR on macro-F1, the best reaches
80% accuracy on bible-genre and 50% on fortunes; our encode throughput within 5× of
``tokenizers``' with identical output; EN→ES BLEU: no attention < attention (≥ 15) <
Transformer (≥ 20), each in 45 minutes.

    python benchmarks/nlp.py                       # tokenizer, baseline, the classifiers
    python benchmarks/nlp.py --only baseline cnn   # some of them
    python benchmarks/nlp.py train.epochs=2 --only cnn
    python benchmarks/nlp.py --only pretrained_gpt gpt     # pretrained against scratch
    python benchmarks/nlp.py data.translations=web --only pretrained_gpt \
        --lm-set data.translations=web train.max_steps=1000   # without the KJV, shorter
    python benchmarks/nlp.py --only en_es_transformer   # 7 epochs, about 35 minutes
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from vision import emit

from neuralab import config
from neuralab.config import DataConfig
from neuralab.data import bible
from neuralab.data.text import LABELLED_TEXTS as READERS
from neuralab.data.text import labelled_split
from neuralab.text.bpe import BYTE_RANK, BPETokenizer
from neuralab.train import fit, load_model, new_run_dir, test

PRESETS = ("cnn", "bilstm", "transformer", "gpt", "fortunes_cnn")
TRANSLATORS = ("en_es_gru", "en_es_attention", "en_es_transformer")


def tokenizer_figures(texts: list[str], vocab: int) -> dict:
    """Train ours and Hugging Face's on the same text with GPT-2's split; compare."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = "\n".join(texts)
    start = time.perf_counter()
    ours = BPETokenizer.train(text, vocab, pattern="gpt2")
    ours_train = time.perf_counter() - start
    theirs = Tokenizer(models.BPE())
    theirs.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    start = time.perf_counter()
    theirs.train_from_iterator([text], trainer)
    theirs_train = time.perf_counter() - start
    ours_s, theirs_s = [], []
    for _ in range(3):
        fresh = BPETokenizer(ours.merges, "gpt2")  # an empty chunk cache each time
        start = time.perf_counter()
        ids = fresh.encode(text)
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        their_ids = theirs.encode(text).ids
        theirs_s.append(time.perf_counter() - start)
    same = [BYTE_RANK[i] if i < 256 else i for i in ids] == their_ids
    mb = len(text.encode("utf-8")) / 1e6
    return {
        "what": f"byte-level BPE, vocab {vocab}, on the WEB train verses ({mb:.1f} MB)",
        "train_s": round(ours_train, 2),
        "hf_train_s": round(theirs_train, 2),
        "same_ids_as_hf": same,
        "tokens": len(ids),
        "encode_mb_per_s": round(mb / statistics.median(ours_s), 2),
        "hf_encode_mb_per_s": round(mb / statistics.median(theirs_s), 2),
    }


def baseline(name: str, translations: tuple[str, ...] = ("web",)) -> dict:
    """TF-IDF (unigrams and bigrams, sublinear tf) + logistic regression on ``name``, trained
    on the verses of ``translations`` (bible-genre)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    cfg = DataConfig(name=name, translations=translations)
    x_train, y_train = labelled_split(cfg, "train")
    x_test, y_test = labelled_split(cfg, "test")
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    classifier = LogisticRegression(max_iter=2000, C=10.0)
    classifier.fit(vectorizer.fit_transform(x_train), y_train)
    predicted = classifier.predict(vectorizer.transform(x_test))
    return {
        "what": f"TF-IDF (1-2 grams) + logistic regression on {name}",
        "translations": ",".join(translations),
        "test_acc": round(accuracy_score(y_test, predicted), 4),
        "test_macro_f1": round(f1_score(y_test, predicted, average="macro"), 4),
        "train_s": round(time.perf_counter() - start, 1),
    }


def classifier(preset: str, overrides: list[str], out: Path, what: str = "") -> dict:
    """Train ``preset`` to the end and test it."""
    cfg = config.load(preset, overrides)
    run_dir = new_run_dir(out / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}", cfg)
    summary = fit(cfg, run_dir, progress=False)
    result = test(run_dir)
    return {
        "what": what or preset,
        "run": str(run_dir),
        "test_acc": round(result["test/acc"], 4),
        "test_macro_f1": round(result["test/macro_f1"], 4),
        "majority": round(result["test/majority"], 4),
        "train/wall_s": summary["train/wall_s"],
        "train/steps": summary["train/steps"],
        "params": load_model(run_dir).num_params(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of every preset")
    parser.add_argument(
        "--only", nargs="+", default=["tokenizer", "baseline", *PRESETS],
        choices=["tokenizer", "baseline", *PRESETS, "pretrained_gpt", *TRANSLATORS],
    )  # fmt: skip
    parser.add_argument("--out", default="runs/bench", help="where new runs go")
    parser.add_argument(
        "--lm-set", nargs="*", default=[], metavar="KEY=VALUE", help="pretrained_gpt: override "
        "bible_genre_lm (the positional overrides go to the classifier)",
    )  # fmt: skip
    args = parser.parse_args()
    if "tokenizer" in args.only:
        emit(tokenizer_figures(bible.genre_split("train")[0], 4000))
    if "baseline" in args.only:
        for name in READERS:
            emit(baseline(name))
        emit(baseline("bible-genre", ("web", "kjv")))  # what data.translations=web,kjv reads
    if "pretrained_gpt" in args.only:
        cfg = config.load("bible_genre_lm", args.lm_set)
        run_dir = new_run_dir(
            Path(args.out) / f"bible_genre_lm-{time.strftime('%Y%m%d-%H%M%S')}", cfg
        )
        summary = fit(cfg, run_dir, progress=False)
        emit(
            {
                "what": "bible_genre_lm",
                "run": str(run_dir),
                "val/loss": round(summary["val/loss"], 4),
                "test/loss": round(test(run_dir)["test/loss"], 4),
                "train/wall_s": summary["train/wall_s"],
                "train/steps": summary["train/steps"],
            }
        )
        init = [*args.overrides, f"train.init_from={run_dir}"]
        emit(classifier("bible_genre_gpt", init, Path(args.out), "bible_genre_gpt pretrained"))
    for arch in (a for a in PRESETS if a in args.only):
        preset = arch if arch.startswith("fortunes") else f"bible_genre_{arch}"
        emit(classifier(preset, args.overrides, Path(args.out)))
    for name in (t for t in TRANSLATORS if t in args.only):
        preset = f"bible_{name}"
        cfg = config.load(preset, args.overrides)
        run_dir = new_run_dir(Path(args.out) / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}", cfg)
        summary = fit(cfg, run_dir, progress=False)
        start = time.perf_counter()
        result = test(run_dir)
        emit(
            {
                "what": preset,
                "run": str(run_dir),
                **{k: round(v, 2) for k, v in result.items() if k.endswith(("bleu", "chrf"))},
                "signature": result["test/bleu_signature"],
                "val/bleu": round(summary.get("val/bleu", float("nan")), 2),
                "train/target_tokens_per_s": summary["train/target_tokens_per_s"],
                "train/wall_s": summary["train/wall_s"],
                "train/steps": summary["train/steps"],
                "test_s": round(time.perf_counter() - start, 1),
                "params": load_model(run_dir).num_params(),
            }
        )


if __name__ == "__main__":
    main()
