"""Metric logging: one JSON object per line in ``metrics.jsonl``, mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from neuralab.runs import read_jsonl


class MetricsLogger:
    """Appends records ``{"step": ..., "epoch": ..., "split/metric": ...}``.

    On resume from step N, records after N (written after the last checkpoint by
    the run that stopped) are dropped, so the log matches the resumed state.
    """

    def __init__(self, run_dir: Path, start_step: int = 0, tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= start_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step or None)

    def log(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "epoch", "train_s") and isinstance(value, int | float):
                    if math.isfinite(value):
                        self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
