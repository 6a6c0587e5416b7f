"""``neuralab sample``: text from a trained language model, streamed as it is written."""

from __future__ import annotations

import argparse
import sys
import time

from neuralab.cli.common import add_json, add_which, print_json
from neuralab.errors import UserError

ORDER = 8  # beside the other text commands: tokenizer, translate


def cmd_sample(args: argparse.Namespace) -> int:
    from neuralab.runs import set_threads
    from neuralab.train import sample_stream

    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    if args.tokens < 0 or args.temperature < 0:
        raise UserError("--tokens and --temperature must be >= 0")
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    set_threads(args.threads)
    prompt = args.prompt
    if args.escapes:
        prompt = prompt.replace("\\n", "\n").replace("\\t", "\t")
    stream = sample_stream(
        args.run,
        prompt,
        args.tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        which=args.which,
    )
    start = time.perf_counter()  # the model is loaded: the rate is the sampling's own
    if args.json:
        text = "".join(stream)
        rate = len(text) / max(time.perf_counter() - start, 1e-9)
        settings = {"temperature": args.temperature, "top_k": args.top_k, "seed": args.seed}
        speed = {"characters_per_second": round(rate, 1)}
        print_json({"run": args.run, "prompt": prompt, **settings, "text": text, **speed})
        return 0
    sys.stdout.write(prompt)
    written = 0
    for ch in stream:
        sys.stdout.write(ch)
        sys.stdout.flush()
        written += len(ch)
    sys.stdout.write("\n")
    seconds = time.perf_counter() - start
    rate = written / max(seconds, 1e-9)
    print(f"neuralab: {written} characters in {seconds:.2f} s ({rate:,.0f}/s)", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="text from a trained language model, as it is written")
    p.add_argument("run")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--escapes", action="store_true", help=r"read \n and \t in --prompt")
    p.add_argument("--tokens", type=int, default=500, help="characters to write (default: 500)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = always the likeliest")
    p.add_argument("--top-k", type=int, help="sample among the k likeliest characters only")
    p.add_argument("--seed", type=int, default=0, help="same seed, same text (default: 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default: 1, the fastest for one text at a time: each step's "
        "matrices are too small to share; 0 = every core)",
    )
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_sample)
