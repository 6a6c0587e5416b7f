"""MkDocs hook: the CLI and config-key reference pages, generated at build time from the code
they document, so they cannot drift from it.

- ``reference/cli.md`` walks the argparse parser that ``neuralab`` itself runs
  (``neuralab.cli.build_parser``): every subcommand, its usage, arguments and defaults.
- ``reference/config.md`` walks the config dataclasses (``neuralab.config.RunConfig``,
  ``neuralab.rl.config.RLConfig`` and every registered model's config): every key, its type,
  default, allowed values, and the comment that documents it in the source.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing

from mkdocs.structure.files import File

CLI_PAGE = "reference/cli.md"
CONFIG_PAGE = "reference/config.md"


def on_files(files, config):
    files.append(File.generated(config, CLI_PAGE, content=cli_page()))
    files.append(File.generated(config, CONFIG_PAGE, content=config_page()))
    return files


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------- the CLI


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser, one-line help) for every subcommand, depth first, in the order of
    ``--help``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name) or ""
                yield from subcommands(sub, (*path, name))


def _argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        flags = ", ".join(f"`{s}`" for s in action.option_strings)
        name = flags or f"`{action.metavar or action.dest}`"
        if action.option_strings and action.nargs != 0:
            name += f" `{action.metavar or action.dest.upper()}`"
        details = action.help or ""
        if action.choices is not None:
            details += " (one of: " + ", ".join(f"`{c}`" for c in action.choices) + ")"
        default = action.default
        unset = default in (None, False, argparse.SUPPRESS) or action.nargs == 0
        shown = "" if unset else f"`{default}`"
        rows.append(f"| {_cell(name)} | {_cell(details)} | {_cell(shown)} |")
    return rows


def cli_page() -> str:
    from neuralab.cli import build_parser

    parser = build_parser()
    out = [
        "# CLI reference",
        "",
        "Generated from the parser that `neuralab` runs, so it lists exactly what the installed "
        "version accepts. Every command answers `--help` with the same text.",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
    ]
    for path, sub, short in subcommands(parser):
        out += [f"{'#' * min(len(path) + 1, 4)} neuralab {' '.join(path)}", ""]
        text = sub.description or short
        if text:
            out += [textwrap.dedent(text).strip(), ""]
        out += ["```text", sub.format_usage().strip(), "```", ""]
        rows = _argument_rows(sub)
        if rows:
            out += ["| argument | what it does | default |", "|---|---|---|", *rows, ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- config keys


def field_comments(cls: type) -> dict[str, str]:
    """The comment that documents each field in the class's source: the comment lines just
    above it and the comment at the end of its line."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line in comments and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        inline = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        out[node.target.id] = " ".join(above + inline)
    return out


def _number(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _allowed(metadata) -> str:
    if "choices" in metadata:
        return ", ".join(f"`{c}`" for c in metadata["choices"])
    if "bounds" in metadata:
        low, high, low_open, high_open = metadata["bounds"]
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '≥'} {_number(low)}")
        if high is not None:
            parts.append(f"{'<' if high_open else '≤'} {_number(high)}")
        return " and ".join(parts)
    return ""


def _default(f: dataclasses.Field) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()


def _type_name(tp: object) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def section_table(cls: type, skip: frozenset[str] = frozenset()) -> list[str]:
    hints = typing.get_type_hints(cls)
    notes = field_comments(cls)
    rows = ["| key | type | default | allowed | what it means |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        rows.append(
            f"| `{f.name}` | {_cell(_type_name(hints[f.name]))} | `{_cell(repr(_default(f)))}` "
            f"| {_cell(_allowed(f.metadata))} | {_cell(notes.get(f.name, ''))} |"
        )
    return rows


def _run_config(title: str, intro: str, cls: type) -> list[str]:
    out = [f"## {title}", "", intro, ""]
    hints = typing.get_type_hints(cls)
    top = [f for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[f.name])]
    notes = field_comments(cls)
    out += ["| top-level key | type | default | what it means |", "|---|---|---|---|"]
    for f in top:
        out.append(
            f"| `{f.name}` | {_type_name(hints[f.name])} | `{_cell(repr(_default(f)))}` "
            f"| {_cell(notes.get(f.name, ''))} |"
        )
    out.append("")
    for f in dataclasses.fields(cls):
        section = hints[f.name]
        if dataclasses.is_dataclass(section):
            doc = inspect.getdoc(section) or ""
            out += [f"### [{f.name}]", ""]
            if doc and not doc.startswith(section.__name__ + "("):
                out += [doc, ""]
            # [model]'s options are the model's own keys, listed per model below
            out += [*section_table(section, frozenset({"options"})), ""]
    return out


def config_page() -> str:
    from neuralab.config import RunConfig
    from neuralab.models import MODELS
    from neuralab.models.base import model_config_class
    from neuralab.rl.config import RLConfig

    out = [
        "# Config reference",
        "",
        "Generated from the config dataclasses, so it lists exactly the keys the installed "
        "version accepts. A config is a TOML file (or a preset name) plus `section.key=value` "
        "overrides on the command line; an unknown key or a value outside its range is a "
        "one-line error naming the key and what is allowed.",
        "",
    ]
    out += _run_config(
        "Training runs",
        "`neuralab train`, `neuralab pretrain`, `neuralab attack` and the probes read these "
        "(`neuralab.config.RunConfig`).",
        RunConfig,
    )
    out += [
        "### Model options",
        "",
        "`[model]` holds `name` (a registered model) and that model's own options below "
        "(the data sets `num_classes`, `in_channels`, `image_size`, `mean` and `std`).",
        "",
    ]
    data_given = frozenset({"num_classes", "in_channels", "image_size", "mean", "std"})
    by_class: dict[type, list[str]] = {}
    for name in MODELS.names():
        by_class.setdefault(model_config_class(name), []).append(name)
    for cls, names in by_class.items():
        out += [f"#### {cls.__name__}", "", "Models: " + ", ".join(f"`{n}`" for n in names), ""]
        out += [*section_table(cls, data_given), ""]
    out += _run_config(
        "Reinforcement-learning runs",
        "`neuralab rl train` reads these (`neuralab.rl.config.RLConfig`).",
        RLConfig,
    )
    return "\n".join(out)
