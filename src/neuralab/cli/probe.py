"""``neuralab check`` (sanity checks before a long run) and ``neuralab probe``: look inside a
trained model (saliency, gradient flow, attention maps, LSTM cells)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from neuralab.cli.common import (
    Parser,
    add_data_dir,
    add_json,
    add_which,
    comma_list,
    data_dir_override,
    print_json,
    short,
    table,
)
from neuralab.cli.train import check_trains_with
from neuralab.errors import UserError

ORDER = 4


def cmd_check(args: argparse.Namespace) -> int:
    from neuralab import config as config_lib
    from neuralab.probe import format_results, run_checks
    from neuralab.runs import set_threads
    from neuralab.tasks import build_task, task_name

    cfg = config_lib.load(args.config, [*args.overrides, *data_dir_override(args)])
    check_trains_with(cfg, "neuralab train")
    kind = task_name(cfg)
    if kind not in ("classify", "adversarial", "language_model"):
        raise UserError(
            f"neuralab check covers image classification and language models; {args.config} "
            f"is a {kind} run, which it does not check"
        )
    build_task(cfg).check(cfg)
    set_threads(cfg.train.threads)
    out_dir = (
        Path(args.out_dir) if args.out_dir else Path("runs") / "checks" / Path(args.config).stem
    )
    if not args.json:
        print(
            "neuralab check: init loss, overfitting one batch, a zero-input baseline, batch "
            f"independence and a picture of the inputs (under a minute on 2 cores) -> {out_dir}",
            file=sys.stderr,
            flush=True,
        )
    results = run_checks(cfg, out_dir)
    if args.json:
        print_json({"passed": all(r.passed for r in results), "checks": [vars(r) for r in results]})
    else:
        print(format_results(results))
    return 0 if all(r.passed for r in results) else 1


def cmd_probe_saliency(args: argparse.Namespace) -> int:
    from neuralab.probe.saliency import saliency_run

    indices = comma_list(args.index, "--index", int, "0,1,2")
    result = saliency_run(args.run, indices, args.method, args.which)
    if args.json:
        print_json(result)
    else:
        shares = result.get("frame_share")
        for k, (i, label, pred) in enumerate(
            zip(result["indices"], result["labels"], result["predictions"], strict=True)
        ):
            if shares is None:
                print(f"test image {i}: true {label}, predicted {pred}")
                continue
            top = sorted(range(len(shares[k])), key=lambda t: -shares[k][t])[:3]
            used = ", ".join(f"frame {t} {shares[k][t]:.0%}" for t in top)
            print(f"test clip {i}: true {label}, predicted {pred}; most salient: {used}")
        print(f"saliency maps ({args.method}): {result['png']}")
    return 0


def _names(text: str, what: str, allowed: dict[str, Any]) -> list[Any]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise UserError(
            f"{what} takes a comma-separated list of {', '.join(allowed)}; got {text!r}"
        )
    return [allowed[v] for v in values]


def cmd_probe_gradients(args: argparse.Namespace) -> int:
    from neuralab.models import list_models
    from neuralab.probe import gradient_study, gradients

    if args.run:
        result = gradients.gradient_flow_run(args.run, "init" if args.init else args.which)
        if args.json:
            print_json(result)
            return 0
        rows = [
            [r["name"], f"{r['grad_norm']:.3g}", f"{r['weight_norm']:.3g}"]
            for r in result["layers"]
        ]
        print(table(rows, ["layer", "grad norm", "weight norm"]))
        print(f"first/last layer gradient ratio: {result['first_last_grad_ratio']}")
        print(f"plot: {result['png']}")
        return 0
    models = (
        _names(args.models, "--models", {m: m for m in list_models("*[0-9]*", kind="image")})
        if args.models
        else gradient_study.DEFAULT_MODELS
    )
    activations = _names(
        args.activation, "--activation", {a: a for a in ("relu", "sigmoid", "tanh")}
    )
    bns = _names(args.bn, "--bn", {"on": True, "off": False})
    kw = {"steps": args.steps} if args.steps else {}
    result = gradient_study.gradient_study(
        models, activations, bns, dataset=args.dataset, out_dir=args.out_dir, **kw
    )
    if args.json:
        print_json(result)
        return 0
    rows = [
        [
            v["model"],
            v["activation"],
            "on" if v["bn"] else "off",
            short(v["first_last_grad_ratio"]),
            short(v["final_train_loss"]),
        ]
        for v in result["variants"]
    ]
    print(table(rows, ["model", "activation", "BN", "first/last grad", "final train loss"]))
    print(f"{result['dataset']}, {result['steps']} steps each; plots: {', '.join(result['png'])}")
    return 0


def cmd_probe_attention(args: argparse.Namespace) -> int:
    from neuralab import config as config_lib
    from neuralab.models import model_kind
    from neuralab.probe.attention import attention_run

    kind = model_kind(config_lib.load_run(Path(args.run)).model.name)
    if kind == "seq2seq":
        from neuralab.cli.translate import probe_translation_attention

        return probe_translation_attention(args)
    if args.source:
        raise UserError("--source is for translation runs; a GPT run reads --text")
    captions = kind == "caption"
    if captions != (args.image is not None):
        raise UserError(
            "a caption run needs an image: neuralab probe attention RUN scene.png"
            if captions
            else "an image is for caption runs; a GPT run reads --text"
        )
    if captions:
        from neuralab.cli._captions import probe_caption_attention
        from neuralab.cli.train import trained_run

        return probe_caption_attention(args, *trained_run(args, ("caption",))[:3])
    text = _probe_text(args, default_chars=64)
    result = attention_run(args.run, text, args.which)
    if args.json:
        print_json(result)
        return 0
    note = " (kept the last characters that fit the context)" if result["truncated"] else ""
    shape = f"{result['layers']} layers x {result['heads']} heads"
    print(f"{shape} on {len(result['text'])} characters{note}")
    rows = []
    for layer, heads in enumerate(result["per_layer"]):
        for h, (ent, prev) in enumerate(zip(heads["entropy"], heads["previous_char"], strict=True)):
            rows.append([layer, h, f"{ent:.2f}", f"{prev:.2f}"])
    print(table(rows, ["layer", "head", "entropy (nats)", "weight on previous char"]))
    print("maps: " + ", ".join(result["png"]))
    return 0


def cmd_probe_lstm(args: argparse.Namespace) -> int:
    from neuralab.probe.lstm_cells import lstm_run

    result = lstm_run(args.run, _probe_text(args, default_chars=args.chars), args.which)
    if args.json:
        print_json(result)
        return 0
    print(f"{result['layers']} layers x {result['units']} cells over {result['characters']} chars")
    rows = []
    for name, feature in result["features"].items():
        if not feature["present"]:
            rows.append([name, "-", "-", "absent from this text"])
            continue
        for unit in feature["top"]:
            rows.append([name, unit["layer"], unit["unit"], f"{unit['r']:+.2f}"])
    print(table(rows, ["text feature", "layer", "cell", "correlation"]))
    gates = result["mean_gate_saturation"]
    print(
        "mean fraction of time saturated (left < 0.1 / right > 0.9): "
        + ", ".join(f"{g} {v['left']:.2f}/{v['right']:.2f}" for g, v in gates.items())
    )
    print(f"cells: {result['html']}\ngates: {result['png']}")
    return 0


def _probe_text(args: argparse.Namespace, default_chars: int) -> str:
    """--text, else the contents of --text-file, else the start of the run's test text."""
    from neuralab import config as config_lib
    from neuralab import data
    from neuralab.data.text import load_run_tokenizer

    if args.text is not None:
        return args.text
    if getattr(args, "text_file", None):
        return data.read_text_file(args.text_file)
    cfg = config_lib.load_run(Path(args.run))
    tokenizer = load_run_tokenizer(Path(args.run))
    _, splits = data.load_token_splits(cfg.data, tokenizer)
    return tokenizer.decode(splits["test"][:default_chars])


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="sanity checks before a long run; exit 1 if any fails")
    p.add_argument("config", help="a TOML file or preset name")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    add_data_dir(p)
    p.add_argument(
        "--out-dir", help="where the input picture is written (default: runs/checks/CONFIG)"
    )
    add_json(p)
    p.set_defaults(func=cmd_check)

    probe_p = sub.add_parser("probe", help="look inside a trained model")
    probe_sub = probe_p.add_subparsers(dest="probe_command", required=True, parser_class=Parser)
    p = probe_sub.add_parser("saliency", help="saliency maps of test images or clips, as a PNG")
    p.add_argument("run")
    p.add_argument("--index", default="0,1,2,3", help="test-image (or clip) indices, e.g. 0,1,2")
    p.add_argument(
        "--method",
        default="integrated-gradients",
        choices=["grad", "gradxinput", "integrated-gradients", "smoothgrad"],
    )
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_probe_saliency)

    p = probe_sub.add_parser(
        "gradients", help="per-layer gradient flow of a run, or the vanishing-gradient study"
    )
    p.add_argument("run", nargs="?", help="a run (omit for the study of plain nets and ResNets)")
    p.add_argument("--init", action="store_true", help="the run's model at initialisation")
    add_which(p)
    p.add_argument(
        "--models",
        help="plain, resnet (post-activation) or preresnet nets, e.g. plain20,resnet20 "
        "(default: plain20,resnet20,plain56,resnet56,preresnet56)",
    )
    p.add_argument("--activation", default="sigmoid,relu", help="relu, sigmoid, tanh")
    p.add_argument("--bn", default="on,off", help="BatchNorm: on, off or both")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist or digits")
    p.add_argument("--steps", type=int, help="training steps per variant (default: the study's)")
    p.add_argument("--out-dir", default="gradient_study", help="where the plots go")
    add_json(p)
    p.set_defaults(func=cmd_probe_gradients)

    p = probe_sub.add_parser(
        "attention",
        help="attention maps of every head of a GPT run; a captioner's attention for each "
        "word; a translator's alignment of written and source tokens",
    )
    p.add_argument("run")
    p.add_argument("image", nargs="?", help="caption runs: the scene to caption")
    p.add_argument("--text", help="the characters to look at (default: the test text's start)")
    p.add_argument("--source", help="translation runs: the sentence to translate and look at")
    p.add_argument(
        "--out",
        help="caption and translation runs: the PNG (default: IMAGE_attention.png; "
        "RUN/plots/alignment.png)",
    )
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_probe_attention)

    p = probe_sub.add_parser("lstm", help="what single LSTM cells track, and gate saturation")
    p.add_argument("run")
    p.add_argument("--text", help="the text to read")
    p.add_argument("--text-file", help="read this UTF-8 file instead")
    p.add_argument("--chars", type=int, default=3000, help="characters of the test text")
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_probe_lstm)
