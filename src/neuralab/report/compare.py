"""``neuralab compare RUN RUN ...``: runs side by side.

What differs between the runs' resolved configs (and only that), their final metrics, and
their validation curves overlaid; as a compact terminal table and a self-contained HTML page.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from neuralab.configfile import read_toml, run_config_path
from neuralab.errors import UserError
from neuralab.plots import save_figure, subplots
from neuralab.report.html import STYLE, flatten, image, table
from neuralab.runs import read_json, read_jsonl, writable_file

METRICS = (
    "val/acc",
    "val/loss",
    "val/robust_acc",
    "test/acc",
    "test/loss",
    "test/bpc",
    "train/steps",
    "train/wall_s",
    "train/tokens_per_s",
)


def config_differences(run_dirs: list[Path]) -> dict[str, list[Any]]:
    """Every config key whose value is not the same in all runs: key -> one value per run
    ("-" where a run lacks the key, e.g. a model option another model does not have)."""
    flats = [flatten(read_toml(run_config_path(d))) for d in run_dirs]
    keys = sorted(set().union(*flats))
    out = {}
    for key in keys:
        values = [f.get(key, "-") for f in flats]
        if any(v != values[0] for v in values[1:]):
            out[key] = values
    return out


def plot_overlay(run_dirs: list[Path], out: Path) -> Path:
    """Validation loss (and accuracy where measured) against the step, one line per run."""
    records = {d: read_jsonl(d / "metrics.jsonl") for d in run_dirs}
    has_acc = any("val/acc" in r for recs in records.values() for r in recs)
    fig, axes = subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 6, 4))
    axes = list(axes) if has_acc else [axes]
    for run_dir, recs in records.items():
        for ax, key in zip(axes, ("val/loss", "val/acc"), strict=False):
            pts = [(r["step"], r[key]) for r in recs if key in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", markersize=3, label=run_dir.name)
    for ax, key in zip(axes, ("val/loss", "val/acc"), strict=False):
        ax.set(xlabel="step", ylabel=key, title=key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out)


def compare(
    run_dirs: list[str | Path], out: str | Path | None = None, *, force: bool = False
) -> dict[str, Any]:
    """Compare runs; write the HTML page (and a PNG beside it) to ``out``, by default
    ``compare.html`` in the first run's directory, never over an existing file unless
    ``force``; return differences and metrics."""
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise UserError("compare needs at least two run directories")
    differences = config_differences(dirs)
    results = [read_json(d / "results.json") for d in dirs]
    metrics = [m for m in METRICS if any(m in r for r in results)]
    out = writable_file(Path(out) if out else dirs[0] / "compare.html", force=force)
    writable_file(out.with_suffix(".png"), force=force)
    png = plot_overlay(dirs, out.with_suffix(".png"))
    rows = [
        [d.name, *(differences[k][i] for k in differences), *(r.get(m, "-") for m in metrics)]
        for i, (d, r) in enumerate(zip(dirs, results, strict=True))
    ]
    header = ["run", *differences, *metrics]
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>neuralab compare</title><style>{STYLE}</style></head><body>"
        f"<h1>{len(dirs)} runs compared</h1>"
        "<p>Config keys that differ, then final metrics (best validation, test).</p>"
        + table(rows, header)
        + image(png, "validation curves")
        + "<h2>Runs</h2><ul>"
        + "".join(f"<li>{html.escape(str(d))}</li>" for d in dirs)
        + "</ul></body></html>\n"
    )
    out.write_text(page, encoding="utf-8")
    return {
        "runs": [str(d) for d in dirs],
        "differences": differences,
        "metrics": {m: [r.get(m) for r in results] for m in metrics},
        "html": str(out),
        "png": str(png),
    }
