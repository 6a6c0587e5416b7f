"""Training: the loop, optimizers and schedules, checkpoints, seeding, metrics, testing."""

from neuralab.train.evaluate import load_model, test
from neuralab.train.generate import sample, sample_stream
from neuralab.train.loop import fit, new_run_dir

__all__ = ["fit", "load_model", "new_run_dir", "sample", "sample_stream", "test"]
