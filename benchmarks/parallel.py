"""Ways to use the same cores: data-parallel processes vs threads, bf16 vs fp32 autocast, and
torch.compile vs eager, side by side on the same configurations. Prints one JSON object per
configuration on stdout.

    python benchmarks/parallel.py             # fashion_cnn, fashion_resnet, shakespeare_gpt
    python benchmarks/parallel.py --only shakespeare_gpt --repeats 3

Each variant is a real `neuralab train` process (under torchrun for 2 processes) of a fixed
number of steps; its throughput is measured from the run's metrics log between the end of the
warm-up steps (which include torch.compile's compilation) and the last step, training steps
only. Variants of one configuration run back to back, so their ratios are measured side by
side; with --repeats the medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from vision import machine

from neuralab import config
from neuralab.runs import read_jsonl

# (preset, steps, warm-up steps, log_every, unit); text throughput counts tokens
CONFIGS = {
    "fashion_cnn": (120, 20, 10, "images"),
    "fashion_resnet": (60, 10, 5, "images"),
    "shakespeare_gpt": (60, 10, 5, "tokens"),
}
# name: (processes, overrides); one process gets both cores as threads, two get one each
VARIANTS = {
    "1x2 fp32": (1, ["train.threads=2", "train.precision=fp32"]),
    "2x1 fp32": (2, ["train.precision=fp32"]),
    "1x2 bf16": (1, ["train.threads=2", "train.precision=bf16"]),
    "1x2 fp32 compile": (1, ["train.threads=2", "train.precision=fp32", "train.compile=true"]),
    "1x2 bf16 compile": (1, ["train.threads=2", "train.precision=bf16", "train.compile=true"]),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(preset: str, processes: int, overrides: list[str], workdir: Path) -> float:
    """Examples (images or tokens) per second of training steps after the warm-up."""
    steps, warmup, log_every, unit = CONFIGS[preset]
    run_dir = Path(tempfile.mkdtemp(dir=workdir)) / "run"
    cmd = [sys.executable]
    if processes > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    cmd += ["-m", "neuralab", "train", preset, *overrides, f"train.max_steps={steps}"]
    cmd += [f"train.log_every={log_every}", "train.val_every=0", "train.early_stopping=0"]
    cmd += ["--run-dir", str(run_dir), "--json", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ}, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    cfg = config.load_run(run_dir)
    per_step = cfg.train.batch_size * (cfg.model.options["block_size"] if unit == "tokens" else 1)
    records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r]
    first = next(r for r in records if r["step"] >= warmup)
    last = records[-1]
    return per_step * (last["step"] - first["step"]) / (last["train_s"] - first["train_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated presets: " + ",".join(CONFIGS))
    parser.add_argument("--variants", help="comma-separated variants: " + ",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    presets = args.only.split(",") if args.only else list(CONFIGS)
    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            rates: dict[str, list[float]] = {v: [] for v in variants}
            for repeat in range(args.repeats):
                for name in variants:
                    processes, overrides = VARIANTS[name]
                    rates[name].append(run(preset, processes, overrides, Path(tmp)))
                    log(f"{preset} {name} #{repeat + 1}: {rates[name][-1]:.1f}/s")
            median = {name: statistics.median(r) for name, r in rates.items()}
            ratios = {}
            for a, b, key in (
                ("2x1 fp32", "1x2 fp32", "ddp_2x1_over_threads_1x2"),
                ("1x2 bf16", "1x2 fp32", "bf16_over_fp32"),
                ("1x2 fp32 compile", "1x2 fp32", "compile_over_eager_fp32"),
                ("1x2 bf16 compile", "1x2 bf16", "compile_over_eager_bf16"),
            ):
                if a in median and b in median:
                    ratios[key] = round(median[a] / median[b], 3)
            unit = CONFIGS[preset][3]
            print(
                json.dumps(
                    {
                        "benchmark": "parallel",
                        "preset": preset,
                        f"{unit}_per_s": {k: round(v, 1) for k, v in median.items()},
                        "runs": {k: [round(x, 1) for x in v] for k, v in rates.items()},
                        "ratios": ratios,
                        "steps": CONFIGS[preset][0],
                        "warmup_steps": CONFIGS[preset][1],
                        "machine": machine(),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
