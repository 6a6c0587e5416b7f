"""The ``neuralab`` command: one function per subcommand.

User mistakes (``UserError``) print one line on stderr and exit with status 2;
``--json`` prints one JSON object on stdout and nothing else there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from neuralab.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every user error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------------------- data


def cmd_data_list(args: argparse.Namespace) -> int:
    from neuralab import data

    rows = []
    for name in data.DATASETS.names():
        try:
            where = str(data.locate(name, args.data_dir))
        except UserError:
            where = None
        spec = data.DATASETS.get(name)
        rows.append(
            {
                "name": name,
                "present": where is not None,
                "where": where,
                "kind": spec.kind,
                "classes": spec.num_classes,
                "shape": [spec.channels, spec.height, spec.width],
                "how_to_get": spec.how_to_get,
            }
        )
    if args.json:
        _print_json({"datasets": rows})
        return 0
    table = [
        [
            r["name"],
            "x".join(map(str, r["shape"])) if r["kind"] == "image" else "text",
            r["classes"] or "-",
            r["where"] or f"missing: {r['how_to_get']}",
        ]
        for r in rows
    ]
    print(_table(table, ["dataset", "shape", "classes", "found at"]))
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from neuralab import data

    info = data.info(args.name, args.data_dir)
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key:>14}: {value}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from neuralab import data

    path = data.fetch(args.name, args.data_dir)
    print(f"{args.name} is in {path}")
    return 0


# ---------------------------------------------------------------------------- models


def cmd_models_list(args: argparse.Namespace) -> int:
    from neuralab.models import create_model, list_models, model_kind

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no model matches {args.pattern!r}; try: neuralab models list")
    rows = [
        {"name": n, "kind": model_kind(n), "params": create_model(n).num_params()} for n in names
    ]
    if args.json:
        inputs = {"image": "1x28x28, 10 classes", "text": "65-character vocabulary"}
        _print_json({"inputs": inputs, "models": rows})
    else:
        table = [[r["name"], r["kind"], f"{r['params']:,}"] for r in rows]
        print(_table(table, ["model", "kind", "params"]))
        print("params at the defaults: images 1x28x28 with 10 classes; text with 65 characters")
    return 0


# ---------------------------------------------------------------------------- train / test


def _report_text_test(run_dir: Path, summary: dict[str, Any], test: dict[str, Any]) -> None:
    lines = [
        ["status", summary["status"]],
        ["steps", f"{summary['train/steps']} of {summary['train/total_steps']}"],
        ["train time", f"{summary['train/wall_s']:.1f} s on {summary['train/threads']} threads"],
        ["tokens/s", f"{summary['train/tokens_per_s']:,.0f} (training steps only)"],
        ["best val loss", f"{summary.get('val/loss', float('nan')):.4f}"],
        ["best step", summary["best_step"]],
        ["test loss", f"{test['test/loss']:.4f} nats/char on {test['test/tokens']:,} characters"],
        ["test bpc", f"{test['test/bpc']:.4f} bits/char (perplexity {test['test/ppl']:.2f})"],
    ]
    print(_table(lines, ["result", "value"]))
    print()
    print(f"run directory: {run_dir}")
    print(f"  checkpoint:  {run_dir / 'checkpoints' / 'best'}, vocabulary: vocab.json")
    print(f"  sample:      neuralab sample {run_dir} --prompt 'ROMEO:' --tokens 500")
    print(f"  metrics:     {run_dir / 'metrics.jsonl'}, results.json, tensorboard/, plots/")


def _report_test(run_dir: Path, summary: dict[str, Any], test: dict[str, Any]) -> None:
    if "test/bpc" in test:
        _report_text_test(run_dir, summary, test)
        return
    cfg_lines = [
        ["status", summary["status"]],
        ["steps", f"{summary['train/steps']} of {summary['train/total_steps']}"],
        ["train time", f"{summary['train/wall_s']:.1f} s on {summary['train/threads']} threads"],
        [
            "best val acc",
            f"{summary.get('val/acc', float('nan')):.4f} (step {summary['best_step']})",
        ],
        ["test acc", f"{test['test/acc']:.4f} on {test['test/examples']} images"],
        ["test loss", f"{test['test/loss']:.4f}"],
    ]
    print(_table(cfg_lines, ["result", "value"]))
    per_class = test["test/per_class_acc"]
    print()
    print(_table([[c, f"{a:.3f}"] for c, a in per_class.items()], ["class", "test acc"]))
    print()
    print(f"run directory: {run_dir}")
    print(f"  checkpoint:  {run_dir / 'checkpoints' / 'best'}")
    print(f"  plots:       {run_dir / 'plots'} (curves.png, confusion.png)")
    print(f"  metrics:     {run_dir / 'metrics.jsonl'}, results.json, tensorboard/")


def _train_and_test(cfg, run_dir: Path, *, resume: bool, progress: bool, as_json: bool) -> int:
    from neuralab.plots import plot_curves
    from neuralab.train import distributed, fit, test

    _check_supervised(cfg)
    summary = fit(cfg, run_dir, resume=resume, progress=progress)
    if not distributed.init().main:  # under torchrun, rank 0 reports and tests
        return 0
    plot_curves(run_dir)
    if summary["status"] == "interrupted":
        print(
            f"interrupted at step {summary['train/steps']}; checkpoint saved. "
            f"Continue with: neuralab train --resume {run_dir}",
            file=sys.stderr,
        )
        return 130
    result = test(run_dir, "best")
    if as_json:
        _print_json({**summary, **result, "run_dir": str(run_dir)})
    else:
        _report_test(run_dir, summary, result)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from neuralab import config as config_lib
    from neuralab import data
    from neuralab.train import distributed, new_run_dir
    from neuralab.train.loop import check_model_kind

    world = distributed.init()  # a world of one unless torchrun started this process
    items = list(args.items)
    if args.resume:
        run_dir = Path(args.resume)
        if items and "=" not in items[0]:
            raise UserError("give either a config file or --resume RUN, not both")
        cfg = config_lib.load_run(run_dir, items)
        if items and world.main:
            (run_dir / "config.toml").write_text(config_lib.to_toml(cfg))
    else:
        if not items or "=" in items[0]:
            raise UserError(
                "missing config: neuralab train CONFIG [key=value ...], e.g. fashion_cnn"
            )
        path, overrides = items[0], items[1:]
        cfg = config_lib.load(path, overrides)
        check_model_kind(cfg)  # a run that cannot start must not leave an empty directory behind
        _check_supervised(cfg)
        if cfg.data.path:
            data.read_text_file(cfg.data.path)
        elif not cfg.data.download:
            data.locate(cfg.data.name, cfg.data.data_dir or None)
        run_dir = Path(
            distributed.from_main(lambda: new_run_dir(args.run_dir, cfg, Path(path).stem), world)
        )
    if not args.json and world.main:
        print(f"run directory: {run_dir}", file=sys.stderr)
    code = _train_and_test(
        cfg, run_dir, resume=bool(args.resume), progress=not args.no_progress, as_json=args.json
    )
    distributed.finish()  # not after an error: the other ranks are not there to meet it
    return code


# ---------------------------------------------------------------------------- self-supervised


def _check_supervised(cfg, command: str = "train") -> None:
    if cfg.ssl.method != "none":
        raise UserError(
            f"ssl.method={cfg.ssl.method} is self-supervised pretraining, which neuralab "
            f"{command} does not do; run it with: neuralab pretrain CONFIG"
        )


def _check_classifier_run(cfg, run) -> None:
    if cfg.ssl.method != "none":
        raise UserError(
            f"{run} is a pretraining run ({cfg.ssl.method}) with no classifier to use; "
            f"measure it with: neuralab linear-probe {run}, or neuralab knn {run}"
        )


def cmd_pretrain(args: argparse.Namespace) -> int:
    from neuralab import config as config_lib
    from neuralab import data
    from neuralab.plots import plot_curves
    from neuralab.train import distributed, fit, new_run_dir
    from neuralab.train.loop import check_model_kind

    if distributed.launched() and int(os.environ["WORLD_SIZE"]) > 1:
        raise UserError("neuralab pretrain runs in one process; start it without torchrun")
    items = list(args.items)
    if args.resume:
        if items and "=" not in items[0]:
            raise UserError("give either a config file or --resume RUN, not both")
        run_dir = Path(args.resume)
        cfg = config_lib.load_run(run_dir, items)
    else:
        if not items or "=" in items[0]:
            raise UserError("missing config: neuralab pretrain CONFIG [key=value ...]")
        cfg = config_lib.load(items[0], items[1:])
    if cfg.ssl.method == "none":
        raise UserError(
            "this config trains with labels; set ssl.method (simclr, nnclr, dae, mae), "
            "e.g. neuralab pretrain fashion_simclr, or use neuralab train"
        )
    check_model_kind(cfg, "image")
    if args.resume:
        if items:
            (run_dir / "config.toml").write_text(config_lib.to_toml(cfg))
    else:
        if not cfg.data.download:
            data.locate(cfg.data.name, cfg.data.data_dir or None)
        run_dir = new_run_dir(args.run_dir, cfg, name=Path(items[0]).stem)
    if not args.json:
        print(f"run directory: {run_dir}", file=sys.stderr)
    summary = fit(cfg, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    plot_curves(run_dir)
    if summary["status"] == "interrupted":
        print(
            f"interrupted at step {summary['train/steps']}; checkpoint saved. "
            f"Continue with: neuralab pretrain --resume {run_dir}",
            file=sys.stderr,
        )
        return 130
    if args.json:
        _print_json({**summary, "run_dir": str(run_dir)})
        return 0
    rows = [
        ["status", summary["status"]],
        ["steps", f"{summary['train/steps']} of {summary['train/total_steps']}"],
        ["train time", f"{summary['train/wall_s']:.1f} s on {summary['train/threads']} threads"],
        ["best val kNN acc", f"{summary.get('val/knn_acc', float('nan')):.4f}"],
        ["best step", summary["best_step"]],
    ]
    print(_table(rows, ["pretraining", "value"]))
    print(f"\nrun directory: {run_dir}")
    print(f"  measure it:  neuralab linear-probe {run_dir}  |  neuralab knn {run_dir}")
    return 0


def cmd_linear_probe(args: argparse.Namespace) -> int:
    from neuralab.ssl.probe import linear_probe

    result = linear_probe(args.run, labels=args.labels, seed=args.seed, which=args.which)
    if args.json:
        _print_json(result)
        return 0
    chosen_on = "val" if "val/acc" in result else "5-fold cross-validation of those images"
    print(
        f"linear probe on frozen features of {args.run} ({args.which} checkpoint): "
        f"test acc {result['test/acc']:.4f} on {result['test/examples']} images "
        f"({result['train/examples']} labelled training images, L2 {result['l2']:g} "
        f"chosen on {chosen_on}: {result.get('val/acc', result.get('cv/acc')):.4f})"
    )
    return 0


def cmd_knn(args: argparse.Namespace) -> int:
    from neuralab.ssl.probe import knn

    result = knn(args.run, k=args.k, temperature=args.temperature, which=args.which)
    if args.json:
        _print_json(result)
        return 0
    print(
        f"kNN (k={args.k}, cosine, t={args.temperature:g}) on frozen features of {args.run}: "
        f"test acc {result['test/acc']:.4f} on {result['test/examples']} images"
    )
    return 0


def cmd_label_efficiency(args: argparse.Namespace) -> int:
    from neuralab.ssl.label_efficiency import METHODS, label_efficiency

    try:
        fractions = tuple(float(v) for v in args.fractions.split(",") if v.strip())
    except ValueError:
        raise UserError(
            f"--fractions takes numbers like 0.01,0.1,1.0; got {args.fractions!r}"
        ) from None
    if not fractions:
        raise UserError("--fractions needs at least one label fraction, e.g. 0.01,0.1,1.0")
    result = label_efficiency(
        args.run,
        fractions,
        seeds=args.seeds,
        k=args.k,
        scratch_steps=args.scratch_steps,
        which=args.which,
        progress=not args.json,
    )
    if args.json:
        _print_json(result)
        return 0
    table = result["table"]
    labels = [table["scratch"][f"{f:g}"]["labels"] for f in fractions]
    header = ["method", *(f"{f:g} ({n} labels)" for f, n in zip(fractions, labels, strict=True))]
    rows = [
        [name, *(f"{100 * c['mean']:.2f} ± {100 * c['std']:.2f}" for c in table[m].values())]
        for m, name in METHODS.items()
    ]
    print(_table(rows, header))
    print(f"test accuracy (%), mean ± std over {args.seeds} seeds; plot: {result['png']}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from neuralab import config as config_lib
    from neuralab.probe import format_results, run_checks
    from neuralab.runs import set_threads

    cfg = config_lib.load(args.config, args.overrides)
    _check_supervised(cfg, "check")
    set_threads(cfg.train.threads)
    out_dir = Path(args.out_dir)
    results = run_checks(cfg, out_dir)
    if args.json:
        _print_json(
            {"passed": all(r.passed for r in results), "checks": [vars(r) for r in results]}
        )
    else:
        print(format_results(results))
    return 0 if all(r.passed for r in results) else 1


def cmd_probe_saliency(args: argparse.Namespace) -> int:
    from neuralab.probe.saliency import saliency_run

    try:
        indices = [int(i) for i in args.index.split(",") if i.strip()]
    except ValueError:
        raise UserError(f"--index takes integers separated by commas; got {args.index!r}") from None
    result = saliency_run(args.run, indices, args.method, args.which)
    if args.json:
        _print_json(result)
    else:
        for i, label, pred in zip(
            result["indices"], result["labels"], result["predictions"], strict=True
        ):
            print(f"test image {i}: true {label}, predicted {pred}")
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
    from neuralab.probe import gradients

    if args.run:
        result = gradients.gradient_flow_run(args.run, "init" if args.init else args.which)
        if args.json:
            _print_json(result)
            return 0
        rows = [
            [r["name"], f"{r['grad_norm']:.3g}", f"{r['weight_norm']:.3g}"]
            for r in result["layers"]
        ]
        print(_table(rows, ["layer", "grad norm", "weight norm"]))
        print(f"first/last layer gradient ratio: {result['first_last_grad_ratio']}")
        print(f"plot: {result['png']}")
        return 0
    models = (
        _names(args.models, "--models", {m: m for m in list_models("*[0-9]*", kind="image")})
        if args.models
        else gradients.DEFAULT_MODELS
    )
    activations = _names(
        args.activation, "--activation", {a: a for a in ("relu", "sigmoid", "tanh")}
    )
    bns = _names(args.bn, "--bn", {"on": True, "off": False})
    kw = {"steps": args.steps} if args.steps else {}
    result = gradients.gradient_study(
        models, activations, bns, dataset=args.dataset, out_dir=args.out_dir, **kw
    )
    if args.json:
        _print_json(result)
        return 0
    rows = [
        [
            v["model"],
            v["activation"],
            "on" if v["bn"] else "off",
            _short(v["first_last_grad_ratio"]),
            _short(v["final_train_loss"]),
        ]
        for v in result["variants"]
    ]
    print(_table(rows, ["model", "activation", "BN", "first/last grad", "final train loss"]))
    print(f"{result['dataset']}, {result['steps']} steps each; plots: {', '.join(result['png'])}")
    return 0


def cmd_probe_attention(args: argparse.Namespace) -> int:
    from neuralab.probe.attention import attention_run

    text = _probe_text(args, default_chars=64)
    result = attention_run(args.run, text, args.which)
    if args.json:
        _print_json(result)
        return 0
    note = " (kept the last characters that fit the context)" if result["truncated"] else ""
    shape = f"{result['layers']} layers x {result['heads']} heads"
    print(f"{shape} on {len(result['text'])} characters{note}")
    rows = []
    for layer, heads in enumerate(result["per_layer"]):
        for h, (ent, prev) in enumerate(zip(heads["entropy"], heads["previous_char"], strict=True)):
            rows.append([layer, h, f"{ent:.2f}", f"{prev:.2f}"])
    print(_table(rows, ["layer", "head", "entropy (nats)", "weight on previous char"]))
    print("maps: " + ", ".join(result["png"]))
    return 0


def cmd_probe_lstm(args: argparse.Namespace) -> int:
    from neuralab.probe.lstm_cells import lstm_run

    result = lstm_run(args.run, _probe_text(args, default_chars=args.chars), args.which)
    if args.json:
        _print_json(result)
        return 0
    print(f"{result['layers']} layers x {result['units']} cells over {result['characters']} chars")
    rows = []
    for name, feature in result["features"].items():
        if not feature["present"]:
            rows.append([name, "-", "-", "absent from this text"])
            continue
        for unit in feature["top"]:
            rows.append([name, unit["layer"], unit["unit"], f"{unit['r']:+.2f}"])
    print(_table(rows, ["text feature", "layer", "cell", "correlation"]))
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

    if args.text is not None:
        return args.text
    if getattr(args, "text_file", None):
        return data.read_text_file(args.text_file)
    cfg = config_lib.load_run(Path(args.run))
    tokenizer = data.CharTokenizer.load(Path(args.run) / "vocab.json")
    _, splits = data.load_token_splits(cfg.data, tokenizer)
    return tokenizer.decode(splits["test"][:default_chars])


def cmd_report(args: argparse.Namespace) -> int:
    from neuralab.report.html import build_report

    path = build_report(args.run, args.out)
    if args.json:
        _print_json({"run": args.run, "html": str(path)})
    else:
        print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from neuralab.report.compare import compare

    result = compare(args.runs, args.out)
    if args.json:
        _print_json(result)
        return 0
    keys = list(result["differences"])
    metrics = list(result["metrics"])
    rows = []
    for i, run in enumerate(result["runs"]):
        values = [result["differences"][k][i] for k in keys]
        values += [_short(result["metrics"][m][i]) for m in metrics]
        rows.append([Path(run).name, *values])
    print(_table(rows, ["run", *keys, *metrics]))
    if not keys:
        print("(the configs are identical)")
    print(f"page: {result['html']}")
    return 0


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "-" if value is None else str(value)


def cmd_test(args: argparse.Namespace) -> int:
    from neuralab import config as config_lib
    from neuralab.train import test

    _check_classifier_run(config_lib.load_run(args.run), args.run)
    result = test(args.run, args.which, data_dir=args.data_dir)
    if args.json:
        _print_json(result)
        return 0
    print(f"{args.run} ({args.which} checkpoint, step {result['test/step']})")
    if "test/bpc" in result:
        print(
            f"test loss {result['test/loss']:.4f} nats/char, {result['test/bpc']:.4f} bits/char, "
            f"perplexity {result['test/ppl']:.2f}, on {result['test/tokens']:,} characters"
        )
        return 0
    print(
        f"test acc {result['test/acc']:.4f}, loss {result['test/loss']:.4f}, "
        f"{result['test/examples']} images"
    )
    print(
        _table(
            [[c, f"{a:.3f}"] for c, a in result["test/per_class_acc"].items()],
            ["class", "test acc"],
        )
    )
    print("confusion matrix (rows: true, columns: predicted):")
    for row in result["test/confusion"]:
        print(" ".join(f"{v:5d}" for v in row))
    return 0


def _trained_run(args: argparse.Namespace):
    """(run_dir, config, best-or-last model in eval mode, dataset spec) of ``args.run``."""
    from neuralab import config as config_lib
    from neuralab import data
    from neuralab.train import load_model

    run_dir = Path(args.run)
    cfg = config_lib.load_run(run_dir)
    _check_classifier_run(cfg, run_dir)
    return run_dir, cfg, load_model(run_dir, args.which), data.DATASETS.get(cfg.data.name)


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from neuralab import data
    from neuralab.data.image_files import border_mean, read_image

    run_dir, cfg, model, spec = _trained_run(args)
    x_train, _ = data.load_split(cfg.data, "train")
    dark = border_mean(x_train[:1000]) < 0.5
    k = min(args.top_k, spec.num_classes)
    out = []
    for path in args.images:
        image, inverted = read_image(
            path, channels=spec.channels, size=(spec.height, spec.width), dark_background=dark
        )
        with torch.no_grad():
            probs = model(image.unsqueeze(0)).softmax(dim=1)[0]
        top = probs.topk(k)
        preds = [
            {"class": spec.classes[i], "index": int(i), "prob": float(p)}
            for p, i in zip(top.values, top.indices, strict=True)
        ]
        out.append({"image": str(path), "inverted": inverted, "top": preds})
    if args.json:
        _print_json({"run": str(run_dir), "predictions": out})
        return 0
    for item in out:
        note = " (inverted: light background)" if item["inverted"] else ""
        guesses = ", ".join(f"{p['class']} {p['prob']:.1%}" for p in item["top"])
        print(f"{item['image']}{note}: {guesses}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from neuralab.train import sample_stream

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
    if args.json:
        text = "".join(stream)
        settings = {"temperature": args.temperature, "top_k": args.top_k, "seed": args.seed}
        _print_json({"run": args.run, "prompt": prompt, **settings, "text": text})
        return 0
    sys.stdout.write(prompt)
    for ch in stream:
        sys.stdout.write(ch)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(
            f"--eps takes numbers separated by commas, e.g. 0.03,0.1; got {text!r}"
        ) from None


def cmd_attack(args: argparse.Namespace) -> int:
    from neuralab import data
    from neuralab.attack.report import AttackSpec, attack_run

    run_dir, cfg, model, spec = _trained_run(args)
    x, y = data.load_split(cfg.data, "test")
    attack = AttackSpec(
        method=args.method,
        norm=args.norm,
        eps=_floats(args.eps),
        alpha=args.alpha,
        steps=args.steps,
        restarts=args.restarts,
        random_start=not args.no_random_start,
        targeted=args.targeted,
        target=args.target,
        n=args.n,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    report = attack_run(model, x, y, list(spec.classes), attack, run_dir)
    if args.json:
        _print_json(
            {
                k: report[k]
                for k in (
                    "attack",
                    "norm",
                    "params",
                    "n",
                    "seed",
                    "clean_acc",
                    "results",
                    "images_per_s",
                )
            }
        )
        return 0
    print(
        f"{attack.name} on {report['n']} test images of {run_dir} ({args.which} checkpoint), "
        f"seed {report['seed']}"
    )
    rows = [["0 (clean)", f"{report['clean_acc']:.4f}"]]
    rows += [[f"{r['eps']:g}", f"{r['robust_acc']:.4f}"] for r in report["results"]]
    print(_table(rows, ["eps", "accuracy"]))
    print(f"{report['images_per_s']:.0f} attacked images/s")
    print(f"report: {run_dir / 'attacks' / (attack.name + '.json')}, plots in {run_dir / 'plots'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from neuralab import config as config_lib
    from neuralab.train import new_run_dir

    cfg = config_lib.load("digits_cnn", args.overrides)
    run_dir = new_run_dir(args.run_dir, cfg, name="demo_digits_cnn")
    print("neuralab demo: a small CNN on scikit-learn's 8x8 digits (1,797 images, no download)")
    print(f"run directory: {run_dir}\n", flush=True)
    return _train_and_test(cfg, run_dir, resume=False, progress=not args.no_progress, as_json=False)


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="neuralab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data_p = sub.add_parser("data", help="datasets: list, info, fetch")
    data_sub = data_p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    p = data_sub.add_parser("list", help="registered datasets and where they are")
    p.add_argument("--json", action="store_true")
    p.add_argument("--data-dir", help="look here first (default: $NEURALAB_DATA)")
    p.set_defaults(func=cmd_data_list)
    p = data_sub.add_parser("info", help="sizes, classes, location, train mean/std")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_data_info)
    p = data_sub.add_parser("fetch", help="download from the canonical source, check sha256")
    p.add_argument("name")
    p.add_argument("--data-dir", help="download here instead of the user cache")
    p.set_defaults(func=cmd_data_fetch)

    models_p = sub.add_parser("models", help="registered models")
    models_sub = models_p.add_subparsers(dest="models_command", required=True, parser_class=_Parser)
    p = models_sub.add_parser("list", help="models matching a wildcard, with parameter counts")
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_list)

    p = sub.add_parser("train", help="train, validate every epoch, test the best checkpoint")
    p.add_argument(
        "items",
        nargs="*",
        metavar="CONFIG [key=value ...]",
        help="a TOML file or preset name, then overrides such as optim.lr=2e-3",
    )
    p.add_argument("--run-dir", help="where to write the run (must not exist yet)")
    p.add_argument("--resume", metavar="RUN", help="continue a stopped run to its configured end")
    p.add_argument("--json", action="store_true", help="print the final results as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    from neuralab.rl.cli import add_commands as add_rl_commands

    add_rl_commands(sub)  # neuralab rl train / rl eval

    p = sub.add_parser("pretrain", help="self-supervised pretraining (no labels are read)")
    p.add_argument(
        "items",
        nargs="*",
        metavar="CONFIG [key=value ...]",
        help="a TOML file or preset (fashion_simclr, fashion_nnclr, fashion_dae, fashion_mae), "
        "then overrides",
    )
    p.add_argument("--run-dir", help="where to write the run (must not exist yet)")
    p.add_argument("--resume", metavar="RUN", help="continue a stopped run to its configured end")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("linear-probe", help="a linear classifier on a run's frozen features")
    p.add_argument("run")
    p.add_argument("--labels", type=float, default=1.0, help="label fraction: 0.01, 0.1, 1.0")
    p.add_argument("--seed", type=int, default=0, help="which class-balanced label subset")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_linear_probe)

    p = sub.add_parser("knn", help="k-nearest-neighbour accuracy of a run's frozen features")
    p.add_argument("run")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--temperature", type=float, default=0.07, help="votes weighted exp(cos/t)")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_knn)

    p = sub.add_parser("label-efficiency", help="pretrained vs scratch vs baselines, few labels")
    p.add_argument("run")
    p.add_argument("--fractions", default="0.01,0.1,1.0", help="label fractions, e.g. 0.01,0.1")
    p.add_argument("--seeds", type=int, default=3, help="label subsets (and inits) per fraction")
    p.add_argument("--k", type=int, default=20, help="kNN neighbours")
    p.add_argument("--scratch-steps", type=int, default=1000, help="from-scratch training steps")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_label_efficiency)

    p = sub.add_parser("check", help="sanity checks before a long run; exit 1 if any fails")
    p.add_argument("config", help="a TOML file or preset name")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--out-dir", default="checks", help="where the input picture is written")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    probe_p = sub.add_parser("probe", help="look inside a trained model")
    probe_sub = probe_p.add_subparsers(dest="probe_command", required=True, parser_class=_Parser)
    p = probe_sub.add_parser("saliency", help="saliency maps of test images, as a PNG")
    p.add_argument("run")
    p.add_argument("--index", default="0,1,2,3", help="test-image indices, e.g. 0,1,2")
    p.add_argument(
        "--method",
        default="integrated-gradients",
        choices=["grad", "gradxinput", "integrated-gradients", "smoothgrad"],
    )
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe_saliency)

    p = probe_sub.add_parser(
        "gradients", help="per-layer gradient flow of a run, or the vanishing-gradient study"
    )
    p.add_argument("run", nargs="?", help="a run (omit for the study of plain nets and ResNets)")
    p.add_argument("--init", action="store_true", help="the run's model at initialisation")
    p.add_argument("--which", default="best", choices=["best", "last"])
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe_gradients)
    p = probe_sub.add_parser("attention", help="attention maps of every head of a GPT run")
    p.add_argument("run")
    p.add_argument("--text", help="the characters to look at (default: the test text's start)")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe_attention)
    p = probe_sub.add_parser("lstm", help="what single LSTM cells track, and gate saturation")
    p.add_argument("run")
    p.add_argument("--text", help="the text to read")
    p.add_argument("--text-file", help="read this UTF-8 file instead")
    p.add_argument("--chars", type=int, default=3000, help="characters of the test text")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe_lstm)

    p = sub.add_parser("report", help="one self-contained HTML page of a run")
    p.add_argument("run")
    p.add_argument("--out", help="where to write it (default: RUN/report.html)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="runs side by side: config differences, metrics, curves")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default="compare.html", help="the HTML page (and a .png beside it)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("test", help="re-test a run's checkpoint on the test split")
    p.add_argument("run")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("sample", help="text from a trained language model, as it is written")
    p.add_argument("run")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--escapes", action="store_true", help=r"read \n and \t in --prompt")
    p.add_argument("--tokens", type=int, default=500, help="characters to write")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = always the likeliest")
    p.add_argument("--top-k", type=int, help="sample among the k likeliest characters only")
    p.add_argument("--seed", type=int, default=0, help="same seed, same text")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("predict", help="top-k classes for image files")
    p.add_argument("run")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("attack", help="robust accuracy under FGSM or PGD, with a report")
    p.add_argument("run")
    p.add_argument("--method", default="pgd", choices=["fgsm", "pgd"])
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--eps", default="0.1", help="one or more budgets in pixel units: 0.03,0.1")
    p.add_argument("--alpha", type=float, default=0.01, help="PGD step size")
    p.add_argument("--steps", type=int, default=20, help="PGD steps")
    p.add_argument("--restarts", type=int, default=1, help="PGD random restarts (worst case)")
    p.add_argument("--no-random-start", action="store_true")
    p.add_argument("--targeted", action="store_true")
    p.add_argument("--target", type=int, help="target class index for --targeted")
    p.add_argument("--n", type=int, default=10000, help="number of test images attacked")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("demo", help="train and test a small CNN on the bundled digits")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--run-dir")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    from neuralab.sweep.cli import add_commands as add_sweep_commands

    add_sweep_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(f"neuralab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neuralab: interrupted", file=sys.stderr)
        return 130
