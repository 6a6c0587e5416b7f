"""``neuralab tokenizer``: train a byte-level BPE tokenizer on a text file, encode text to
ids and decode ids to text."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from neuralab.cli.common import Parser, add_json, print_json
from neuralab.errors import UserError

ORDER = 9


def read_text(path: str) -> str:
    """A UTF-8 text file's content; a missing, unreadable or empty file is a one-line error."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"no such text file: {path}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not text:
        raise UserError(f"{path} is empty: there is nothing to learn merges from")
    return text


def cmd_train(args: argparse.Namespace) -> int:
    from neuralab.text.bpe import BPETokenizer

    text = read_text(args.file)
    start = time.perf_counter()
    tokenizer = BPETokenizer.train(text, args.vocab, args.pattern, args.special)
    seconds = time.perf_counter() - start
    out = tokenizer.save(args.out)
    ids = len(tokenizer.encode_ordinary(text))
    result = {
        "tokenizer": str(out),
        "vocab_size": tokenizer.vocab_size,
        "merges": len(tokenizer.merges),
        "special": tokenizer.special,
        "pattern": tokenizer.pattern,
        "train_s": round(seconds, 3),
        "text_bytes": len(text.encode("utf-8")),
        "text_tokens": ids,
    }
    if args.json:
        print_json(result)
        return 0
    print(
        f"wrote {out}: {tokenizer.vocab_size} tokens ({len(tokenizer.merges)} merges, "
        f"{args.pattern} split) in {seconds:.1f} s; the file is "
        f"{result['text_bytes'] / ids:.2f} bytes a token ({ids:,} tokens)"
    )
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from neuralab.text.bpe import BPETokenizer

    tokenizer = BPETokenizer.load(args.tokenizer)
    ids = tokenizer.encode(args.text)
    if args.json:
        pieces = [tokenizer.decode_bytes([i]).decode("utf-8", errors="replace") for i in ids]
        print_json({"ids": ids, "pieces": pieces})
    else:
        print(" ".join(map(str, ids)))
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from neuralab.text.bpe import BPETokenizer

    tokenizer = BPETokenizer.load(args.tokenizer)
    print(tokenizer.decode(args.ids))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    tok_p = sub.add_parser("tokenizer", help="byte-level BPE: train on a text, encode, decode")
    tok_sub = tok_p.add_subparsers(dest="tokenizer_command", required=True, parser_class=Parser)
    p = tok_sub.add_parser("train", help="learn BPE merges from a UTF-8 text file")
    p.add_argument("file")
    p.add_argument("--vocab", type=int, default=8000, help="tokens in all (default: 8000)")
    p.add_argument("--out", default="tokenizer.json", help="where to write it")
    p.add_argument(
        "--pattern",
        choices=["gpt4", "gpt2"],
        default="gpt4",
        help="the regex that splits text into chunks before merging (default: gpt4)",
    )
    p.add_argument("--special", nargs="*", default=[], help="special tokens, e.g. '<|endoftext|>'")
    add_json(p)
    p.set_defaults(func=cmd_train)
    p = tok_sub.add_parser("encode", help="the ids of a text")
    p.add_argument("tokenizer")
    p.add_argument("text")
    add_json(p, "the ids and each one's text")
    p.set_defaults(func=cmd_encode)
    p = tok_sub.add_parser("decode", help="the text of ids")
    p.add_argument("tokenizer")
    p.add_argument("ids", nargs="+", type=int)
    p.set_defaults(func=cmd_decode)
