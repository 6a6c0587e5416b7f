"""What `neuralab predict` and `data info` do for text classification, and `data info` for
parallel texts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from neuralab.cli.common import print_json, table, top_classes
from neuralab.errors import UserError


def text_info(args: argparse.Namespace) -> dict[str, Any]:
    """Where the texts are, and per split: texts, texts per class, words per text."""
    import statistics

    from neuralab import data
    from neuralab.config import DataConfig
    from neuralab.tasks.textclass import split_texts

    cfg = DataConfig(name=args.name, data_dir=args.data_dir or "")
    spec = data.DATASETS.get(args.name)
    info: dict[str, Any] = {
        "name": args.name,
        "kind": spec.kind,
        "where": str(data.locate(args.name, args.data_dir)),
        "classes": len(spec.classes),
        "splits": {},
    }
    for split in ("train", "val", "test"):
        texts, labels = split_texts(cfg, split)
        words = sorted(len(t.split()) for t in texts)
        counts = labels.bincount(minlength=len(spec.classes)).tolist()
        info["splits"][split] = {
            "texts": len(texts),
            "per_class": dict(zip(spec.classes, counts, strict=True)),
            "majority": round(max(counts) / max(len(texts), 1), 4),
            "words_median": statistics.median(words) if words else 0,
            "words_p90": words[int(0.9 * (len(words) - 1))] if words else 0,
        }
    return info


def pairs_info(args: argparse.Namespace) -> dict[str, Any]:
    """Where the two translations are, how many verse pairs the alignment rule dropped, and
    per split: its books, pairs, and words per source and target (median, 90th percentile)."""
    import statistics

    from neuralab.data import bible

    source, target = bible.PAIRS[args.name]
    _, dropped = bible.aligned_pairs(source, target, args.data_dir)
    info: dict[str, Any] = {
        "name": args.name,
        "kind": "parallel-text",
        "source": f"{bible.MODULES[source]} in {bible.find_module(source, args.data_dir)}",
        "target": f"{bible.MODULES[target]} in {bible.find_module(target, args.data_dir)}",
        "dropped": dropped,
        "splits": {},
    }
    for split in ("train", "val", "test"):
        pairs = bible.translation_split(args.name, split, args.data_dir)
        books = sorted({bible.parse_ref(p[0])[0] for p in pairs}, key=bible.BOOKS.index)
        row: dict[str, Any] = {"pairs": len(pairs), "books": len(books)}
        if split != "train":
            row["books"] = books
        for side, k in (("source", 1), ("target", 2)):
            words = sorted(len(p[k].split()) for p in pairs)
            row[f"{side}_words_median"] = statistics.median(words)
            row[f"{side}_words_p90"] = words[int(0.9 * (len(words) - 1))]
        info["splits"][split] = row
    return info


def predict_texts(args: argparse.Namespace, run_dir: Path, cfg: Any, model: Any) -> int:
    """The top classes of each ``--text``; a text longer than the run's ``data.max_tokens``
    is cut there, with a warning on stderr."""
    import torch

    from neuralab import data
    from neuralab.tasks.textclass import TOKENIZER, encode_texts
    from neuralab.text.bpe import BPETokenizer

    if args.images:
        raise UserError(f"{run_dir} classifies texts: pass them with --text, not as files")
    if not args.text:
        raise UserError("give the texts to classify with --text TEXT (once per text)")
    if any(not t.strip() for t in args.text):
        raise UserError("a --text is empty: there is nothing to classify")
    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    classes = data.DATASETS.get(cfg.data.name).classes
    tokenizer = BPETokenizer.load(run_dir / TOKENIZER)
    out = []
    for text in args.text:
        ids, cut = encode_texts(tokenizer, [text], cfg.data.max_tokens)
        if cut:
            print(
                f"neuralab: warning: the text was cut to its first {cfg.data.max_tokens} tokens",
                file=sys.stderr,
            )
        with torch.no_grad():
            probs = model(ids).softmax(dim=1)[0]
        top = top_classes(probs, classes, args.top_k)
        out.append({"text": text, "tokens": int(ids.shape[1]), "top": top})
    if args.json:
        print_json({"run": str(run_dir), "predictions": out})
        return 0
    for item in out:
        shown = item["text"] if len(item["text"]) <= 60 else item["text"][:57] + "..."
        print(f"{shown!r}: " + ", ".join(f"{p['class']} {p['prob']:.1%}" for p in item["top"]))
    return 0


def print_translation_test(result: dict) -> int:
    """BLEU and chrF of the beam, greedy decoding and the source copied, with signatures."""
    beam = result["test/beam"]
    rows = [
        [f"beam {beam}", f"{result['test/bleu']:.2f}", f"{result['test/chrf']:.2f}"],
        ["greedy", f"{result['test/greedy_bleu']:.2f}", f"{result['test/greedy_chrf']:.2f}"],
        ["source copied", f"{result['test/copy_bleu']:.2f}", f"{result['test/copy_chrf']:.2f}"],
    ]
    books = ", ".join(result["test/books"])
    print(f"{result['test/examples']} test verses ({books}), scored by sacreBLEU:")
    print(table(rows, ["translation", "BLEU", "chrF"]))
    print(f"BLEU: {result['test/bleu_signature']}\nchrF: {result['test/chrf_signature']}")
    return 0
