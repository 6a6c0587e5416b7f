"""``neuralab translate``: the translation of sentences by a trained translation run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuralab.cli.common import add_json, add_which, print_json
from neuralab.errors import UserError

ORDER = 10


def translations(args: argparse.Namespace, texts: list[str], beam: int, attends: bool = False):
    """(run directory, the run's config, ``translate_texts`` of ``texts``), with a warning on
    stderr for each text cut at the model's length; ``attends``: refuse a model without
    attention."""
    from neuralab.cli.train import trained_run
    from neuralab.models.base import unwrap
    from neuralab.models.seq2seq import Seq2Seq
    from neuralab.tasks.translate import TOKENIZER, translate_texts
    from neuralab.text.bpe import BPETokenizer

    run_dir, cfg, model, _ = trained_run(args, ("seq2seq",))
    if attends and not unwrap(model, Seq2Seq).attends:
        raise UserError(
            f"{run_dir} holds {cfg.model.name}, which reads the source as one vector and has "
            "no attention to picture: use a seq2seq_attention or seq2seq_transformer run"
        )
    tokenizer = BPETokenizer.load(Path(run_dir) / TOKENIZER)
    out = translate_texts(model, tokenizer, texts, beam)
    for item in out:
        if item["cut"]:
            print(
                f"neuralab: warning: the sentence was cut to its first {cfg.data.max_tokens} "
                "tokens, the most the model reads",
                file=sys.stderr,
            )
    return run_dir, cfg, out


def cmd_translate(args: argparse.Namespace) -> int:
    run_dir, _, out = translations(args, args.text, args.beam)
    if args.json:
        items = [{k: item[k] for k in ("text", "translation", "cut")} for item in out]
        print_json({"run": str(run_dir), "beam": args.beam, "translations": items})
        return 0
    for item in out:
        print(item["translation"])
    return 0


def probe_translation_attention(args: argparse.Namespace) -> int:
    """``neuralab probe attention RUN --source TEXT``: the greedy translation of one sentence
    and the picture of its cross-attention (written tokens × source tokens)."""
    from neuralab.plots import plot_alignment

    if not args.source:
        raise UserError("a translation run reads the sentence to look at from --source TEXT")
    run_dir, _, (item,) = translations(args, [args.source], 1, attends=True)
    out = Path(args.out or Path(run_dir) / "plots" / "alignment.png")
    plot_alignment(item["source"], item["target"], item["weights"], out)
    strongest = [item["source"][j] for j in item["weights"].argmax(1).tolist()]
    result = {
        "source": args.source,
        "translation": item["translation"],
        "alignment": [[t, s] for t, s in zip(item["target"], strongest, strict=True)],
        "png": str(out),
    }
    if args.json:
        print_json(result)
        return 0
    print(result["translation"])
    pairs = ", ".join(f"{t.strip()}<-{s.strip()}" for t, s in result["alignment"])
    print(f"each written token <- the source token it attends to most: {pairs}")
    print(f"alignment picture: {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate sentences with a trained translation run")
    p.add_argument("run")
    p.add_argument("text", nargs="+", help="the sentences, each one argument")
    p.add_argument("--beam", type=int, default=4, help="beam width; 1 is greedy (default: 4)")
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_translate)
