"""Speech recognition with CTC (issue 23), one JSON object per line per preset:
``digits_ctc_lstm``, ``commands_ctc_lstm``, ``digits_ctc_transformer``.

Each object: WER, CER and exact transcripts on the test voices never heard in training
(prefix beam search, and greedy), the same on new utterances of the training voices, WER
per test voice, the accuracy of always answering the most frequent training transcript,
the real-time factor of the test pipeline (features, model, beam search), training time
and parameters.

Targets (2 CPU cores): spoken-digits WER ≤ 5% on unseen voices and ≤ 2% on seen voices,
within 20 minutes of training; spoken-commands exact ≥ 95% on unseen voices; beam WER ≤
greedy WER; real-time factor ≤ 0.05; the Transformer beside the LSTM at equal wall time.

    python benchmarks/speech.py                          # the three presets
    python benchmarks/speech.py --only digits_ctc_lstm
    python benchmarks/speech.py train.epochs=2 --only commands_ctc_lstm
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vision import emit

from neuralab import config
from neuralab.train import fit, load_model, new_run_dir, test

PRESETS = ("digits_ctc_lstm", "commands_ctc_lstm", "digits_ctc_transformer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of every preset")
    parser.add_argument("--only", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--out", default="runs/bench", help="where new runs go")
    args = parser.parse_args()
    for preset in (p for p in PRESETS if p in args.only):
        cfg = config.load(preset, args.overrides)
        run_dir = new_run_dir(Path(args.out) / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}", cfg)
        summary = fit(cfg, run_dir, progress=False)
        result = test(run_dir)
        figures = {}
        for prefix in ("test/", "test/greedy_", "test_seen/", "test_seen/greedy_"):
            for metric in ("wer", "cer", "acc"):
                figures[prefix + metric] = round(result[prefix + metric], 4)
        emit(
            {
                "what": preset,
                "run": str(run_dir),
                **figures,
                "test/wer_by_voice": {
                    k: round(v, 4) for k, v in result["test/wer_by_voice"].items()
                },
                "test/chance_acc": round(result["test/chance_acc"], 4),
                "test/rtf": round(result["test/rtf"], 4),
                "val/wer": round(summary.get("val/wer", float("nan")), 4),
                "train/wall_s": summary["train/wall_s"],
                "train/steps": summary["train/steps"],
                "train/audio_s": summary["train/audio_s"],
                "params": sum(p.numel() for p in load_model(run_dir).parameters()),
            }
        )


if __name__ == "__main__":
    main()
