"""``neuralab report RUN``: one self-contained HTML page of a run.

Everything is inside the file: images are embedded as base64 PNG, styles inline, no script
and no network, so the page can be mailed, archived or opened offline years later. It shows
the resolved config, the learning curves, the test metrics, the confusion matrix (a
detector's per-class AP, precision-recall curves and test gallery; a segmenter's per-class
IoU), and every attack report and probe found in the run directory.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from neuralab.configfile import read_toml, run_config_path
from neuralab.errors import UserError
from neuralab.plots import plot_curves
from neuralab.runs import read_json, writable_file

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}"
    "th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:4px 0}"
    "figure{margin:0 0 1.5em}figcaption{font-size:12px;color:#555}"
    "iframe{width:100%;height:480px;border:1px solid #ccc}"
    "pre{background:#f7f7f7;padding:8px;white-space:pre-wrap}"
)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": 3}} -> {"train.epochs": 3}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def image(path: Path, caption: str | None = None) -> str:
    """A figure with ``path`` embedded as a base64 PNG."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = html.escape(caption or path.name)
    alt = html.escape(path.stem)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _scalars(results: dict[str, Any]) -> list[list[Any]]:
    return [[k, v] for k, v in results.items() if isinstance(v, int | float | str | bool)]


def _attacks(run_dir: Path) -> str:
    parts = []
    for path in sorted((run_dir / "attacks").glob("*.json")):
        report = read_json(path)
        keys = report.get("metrics", ["robust_acc"])  # a scene run's attack: mIoU or mAP
        clean = report.get("clean", {"robust_acc": report.get("clean_acc")})
        rows = [["0 (clean)", *(clean.get(k) for k in keys)]]
        rows += [[r["eps"], *(r.get(k) for k in keys)] for r in report.get("results", [])]
        parts.append(f"<h3>{html.escape(path.stem)}</h3>")
        parts.append(table(rows, ["eps", *(k.replace("robust_acc", "accuracy") for k in keys)]))
    return "".join(parts)


def _probes(run_dir: Path) -> str:
    parts = []
    for path in sorted((run_dir / "probes").glob("*.json")):
        summary = read_json(path)
        summary.pop("maps", None)  # the attention maps themselves are in the PNGs
        shown = json.dumps(summary, indent=1)
        parts.append(f"<h3>{html.escape(path.stem)}</h3><pre>{html.escape(shown[:4000])}</pre>")
    cells = run_dir / "probes" / "lstm_cells.html"
    if cells.exists():
        doc = html.escape(cells.read_text(encoding="utf-8"), quote=True)
        parts.append(f'<h3>LSTM cells</h3><iframe title="LSTM cells" srcdoc="{doc}"></iframe>')
    return "".join(parts)


def _scenes(run_dir: Path, results: dict[str, Any]) -> list[str]:
    """A detector's per-class AP, precision-recall curves and test gallery; a segmenter's
    per-class IoU."""
    from neuralab.plots import plot_pr_curves

    sections = []
    for key, what in (("test/ap", "AP@[.5:.95]"), ("test/iou", "IoU")):
        if isinstance(results.get(key), dict):
            rows = [[c, "absent from the test scenes" if v is None else v]
                    for c, v in results[key].items()]  # fmt: skip
            sections += [f"<h2>Test {what} per class</h2>", table(rows, ["class", what])]
    if (run_dir / "test_pr.json").exists():
        curves = read_json(run_dir / "test_pr.json")
        ap = results.get("test/ap", {})
        png = plot_pr_curves(curves, ap, run_dir / "plots" / "pr_curves.png")
        sections += ["<h2>Precision-recall</h2>", image(png)]
    if (run_dir / "test_gallery.png").exists():
        sections += ["<h2>Test scenes</h2>", image(run_dir / "test_gallery.png")]
    return sections


def _sample(run_dir: Path) -> str:
    """A short sample of a language-model run (seed 0, temperature 0.8), on one thread: a
    token at a time is too little work to share, and on busy cores a second thread costs more
    than it gives (the README has the measurement)."""
    import torch

    from neuralab.train import sample  # lazily: reports of image runs never load training

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        text = sample(run_dir, "\n", 300, temperature=0.8, seed=0)
    finally:
        torch.set_num_threads(threads)
    intro = "<h2>Sample</h2><p>300 tokens, temperature 0.8, seed 0:</p>"
    return f"{intro}<pre>{html.escape(text)}</pre>"


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's report (default ``run_dir/report.html``) and return its path."""
    run_dir = Path(run_dir)
    cfg = read_toml(run_config_path(run_dir))  # as written: any kind of run (RL too) has a report
    results = read_json(run_dir / "results.json")
    if not results:
        raise UserError(f"{run_dir} has no results.json yet; train (or test) the run first")
    out = writable_file(Path(out) if out else run_dir / "report.html")
    rl = "algo" in cfg  # its curves (returns, driving) were drawn as it trained
    if (run_dir / "metrics.jsonl").exists() and not rl:
        plot_curves(run_dir)
    done = (
        f"{results.get('env/steps', '?')} env steps"
        if rl
        else f"status {html.escape(str(results.get('status', '?')))}, "
        f"{results.get('train/steps', '?')} steps"
    )
    sections = [
        f"<h1>{html.escape(run_dir.name)}</h1>",
        f"<p>{html.escape(_what(cfg))}, {done} in {results.get('train/wall_s', '?')} s</p>",
        *_driving(results),
        "<h2>Results</h2>",
        table(_scalars(results), ["metric", "value"]),
    ]
    plots = run_dir / "plots"
    for name, title in CURVES:
        if (plots / name).exists():
            sections += [f"<h2>{title}</h2>", image(plots / name)]
    sections += _scenes(run_dir, results)
    if "test/bpc" in results and (run_dir / "checkpoints" / "best").exists():  # a language model
        sections.append(_sample(run_dir))
    if (run_dir / "attacks").is_dir():
        sections += ["<h2>Attacks</h2>", _attacks(run_dir)]
    if (run_dir / "probes").is_dir():
        sections += ["<h2>Probes</h2>", _probes(run_dir)]
    shown = (*(name for name, _ in CURVES), "pr_curves.png")
    others = sorted(p for p in plots.glob("*.png") if p.name not in shown)
    if others:
        sections += ["<h2>Attack and probe plots</h2>", *(image(p) for p in others)]
    flat = flatten(cfg)
    sections += ["<h2>Config</h2>", table([[k, v] for k, v in flat.items()], ["key", "value"])]
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>neuralab report: {html.escape(run_dir.name)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot write {out}: {err.strerror}") from None
    return out


CURVES = (  # the run's plots shown under their own heading, in this order
    ("curves.png", "Learning curves"),
    ("confusion.png", "Test confusion"),
    ("returns.png", "Returns"),
    ("driving.png", "Driving: crash rate and speed"),
)
DRIVING = (  # a driving run's final evaluation: (column, results key, format)
    ("return", "eval/mean_return", "{:.1f}"),
    ("crash rate", "eval/crash_rate", "{:.0%}"),
    ("success", "eval/success_rate", "{:.0%}"),
    ("speed m/s", "eval/mean_speed", "{:.1f}"),
    ("distance m", "eval/mean_distance", "{:.0f}"),
    ("lane changes/km", "eval/lane_changes_per_km", "{:.1f}"),
)


def _driving(results: dict[str, Any]) -> list[str]:
    """A driving run's table (its greedy episodes' driving metrics), beside the command that
    scores the scripted drivers on the same seeds."""
    if results.get("eval/crash_rate") is None:
        return []
    row = ["—" if results.get(key) is None else fmt.format(results[key]) for _, key, fmt in DRIVING]
    vehicles = results.get("eval/vehicles")
    episodes = f"{results.get('eval/episodes', '?')} greedy episodes" + (
        f" of {vehicles} vehicles" if vehicles else ""
    )
    return [
        "<h2>Driving</h2>",
        table([row], [name for name, _, _ in DRIVING]),
        f"<p>{episodes}, on the evaluation seeds; the scripted drivers on the same seeds: "
        "<code>neuralab rl baselines RUN</code></p>",
    ]


def _what(cfg: dict[str, Any]) -> str:
    """'cnn on digits', or 'ppo on CartPole-v1' for a reinforcement-learning run."""
    if "algo" in cfg:
        return f"{cfg['algo']} on {cfg.get('env', {}).get('id', '?')}"
    data = cfg.get("data", {})
    return f"{cfg.get('model', {}).get('name', '?')} on {data.get('path') or data.get('name')}"
