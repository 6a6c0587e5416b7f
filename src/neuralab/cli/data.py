"""``neuralab data list|info|fetch`` and ``neuralab models list``."""

from __future__ import annotations

import argparse

from neuralab.cli.common import Parser, add_json, print_json, table
from neuralab.errors import UserError

ORDER = 0


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
        print_json({"datasets": rows})
        return 0
    lines = [
        [
            r["name"],
            "x".join(map(str, r["shape"])) if r["kind"] == "image" else "text",
            r["classes"] or "-",
            r["where"] or f"missing: {r['how_to_get']}",
        ]
        for r in rows
    ]
    print(table(lines, ["dataset", "shape", "classes", "found at"]))
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from neuralab import data

    info = data.info(args.name, args.data_dir)
    if args.json:
        print_json(info)
    else:
        for key, value in info.items():
            print(f"{key:>14}: {value}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from neuralab import data

    path = data.fetch(args.name, args.data_dir)
    print(f"{args.name} is in {path}")
    return 0


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
        print_json({"inputs": inputs, "models": rows})
    else:
        lines = [[r["name"], r["kind"], f"{r['params']:,}"] for r in rows]
        print(table(lines, ["model", "kind", "params"]))
        print("params at the defaults: images 1x28x28 with 10 classes; text with 65 characters")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    data_p = sub.add_parser("data", help="datasets: list, info, fetch")
    data_sub = data_p.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    p = data_sub.add_parser("list", help="registered datasets and where they are")
    add_json(p)
    p.add_argument("--data-dir", help="look here first (default: $NEURALAB_DATA)")
    p.set_defaults(func=cmd_data_list)
    p = data_sub.add_parser("info", help="sizes, classes, location, train mean/std")
    p.add_argument("name")
    add_json(p)
    p.add_argument("--data-dir", help="look here first (default: $NEURALAB_DATA)")
    p.set_defaults(func=cmd_data_info)
    p = data_sub.add_parser("fetch", help="download from the canonical source, check sha256")
    p.add_argument("name")
    p.add_argument("--data-dir", help="download here instead of the user cache")
    p.set_defaults(func=cmd_data_fetch)

    models_p = sub.add_parser("models", help="registered models")
    models_sub = models_p.add_subparsers(dest="models_command", required=True, parser_class=Parser)
    p = models_sub.add_parser("list", help="models matching a wildcard, with parameter counts")
    p.add_argument("pattern", nargs="?", default="*", help="e.g. 'resnet*' (default: all)")
    add_json(p)
    p.set_defaults(func=cmd_models_list)
