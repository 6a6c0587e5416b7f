"""Classification of clips (``moving-fashion``): cross-entropy of a clip's class, clip
accuracy and the confusion matrix, with the clips kept as uint8 and made float per batch;
at test time also the paper's video-level accuracy, over the clips of longer videos."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from neuralab import data
from neuralab.attack.base import eval_mode
from neuralab.data import moving
from neuralab.data.batches import Batch, ImageBatches
from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.seed import seed_everything
from neuralab.tasks.base import TASKS, Setup, dataset_of_kind
from neuralab.tasks.classify import ClassifyTask

if TYPE_CHECKING:
    from neuralab.config import DataConfig, RunConfig


class ClipBatches(ImageBatches):
    """``ImageBatches`` of uint8 clips (N, T, C, H, W), each batch made float in [0, 1]."""

    def get(self, step: int) -> Batch:
        xb, yb, fresh = super().get(step)
        return Batch(xb.float().div_(255), yb, fresh)


def video_scores(
    model: nn.Module, videos: Tensor, labels: Tensor, frames: int, batch_size: int
) -> dict[str, Any]:
    """Karpathy et al.'s video-level protocol: a video's clips are its windows of ``frames``
    consecutive frames (stride 1), and its prediction is the mean of their class
    probabilities. Returns the video accuracy and, over the same windows, the clip accuracy."""
    windows = videos.shape[1] - frames + 1
    per_batch = max(1, batch_size // windows)
    video_hits = clip_hits = 0
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(videos), per_batch):
            v, y = videos[start : start + per_batch], labels[start : start + per_batch]
            clips = torch.stack([v[:, o : o + frames] for o in range(windows)], 1)
            logits = model(clips.flatten(0, 1).float().div_(255)).float()
            probs = logits.softmax(-1).view(len(v), windows, -1)  # (B, K, classes)
            clip_hits += (probs.argmax(-1) == y[:, None]).sum().item()
            video_hits += (probs.mean(1).argmax(-1) == y).sum().item()
    n = max(len(videos), 1)
    return {
        "test/video_acc": video_hits / n,
        "test/video_clip_acc": clip_hits / (n * windows),
        "test/videos": len(videos),
        "test/clips_per_video": windows,
    }


@TASKS.register("video")
class VideoTask(ClassifyTask):
    """A clip's class from its frames: ``model(x)`` gives (B, classes) logits of (B, T, C,
    H, W) clips."""

    weighs_classes = False

    model_kind = "video"

    def __init__(self, classes: tuple[str, ...]) -> None:
        super().__init__(len(classes))
        self.classes = classes

    @classmethod
    def from_config(cls, cfg: RunConfig) -> VideoTask:
        needs = f"video classification needs a clip set (data.name: {moving.NAME})"
        dataset_of_kind(cfg, "clips", needs)
        if cfg.data.videos_test and cfg.data.video_frames < cfg.data.frames:
            raise UserError(
                f"data.video_frames ({cfg.data.video_frames}) must be at least data.frames "
                f"({cfg.data.frames}), or data.videos_test = 0"
            )
        return cls(moving.classes(cfg.data.variant))

    def check_data(self, cfg: RunConfig) -> None:
        """The clips are generated on first use; their source images must be here."""
        data.locate("fashion-mnist", cfg.data.data_dir or None)

    def prepare(self, cfg: RunConfig, run_dir: Path, resume: bool) -> Setup:
        """The train clips (uint8; each batch made float), the val clips, and the model,
        normalising by the train frames' mean and std."""
        x_train, y_train = moving.load_clip_split(cfg.data, "train")
        x_val, y_val = moving.load_clip_split(cfg.data, "val")
        frames = x_train.flatten(0, 1)  # (N·T, C, H, W), a view
        mean, std = (tuple(v / 255 for v in stat) for stat in data.channel_stats(frames))
        seed_everything(cfg.seed)
        model = create_model(
            cfg.model.name,
            num_classes=self.num_classes,
            in_channels=x_train.shape[2],
            image_size=cfg.data.clip_size,
            frames=cfg.data.frames,
            mean=mean,
            std=std,
            **cfg.model.options,
        )
        batches = ClipBatches(x_train, y_train, cfg.train.batch_size, cfg.seed)
        sizes = {"train/examples": len(x_train), "val/examples": len(x_val)}
        return Setup(model, batches, (x_val, y_val), sizes)

    def test(
        self, cfg: RunConfig, run_dir: Path, model: Any, data_cfg: DataConfig
    ) -> dict[str, Any]:
        """Clip accuracy beside chance, loss, per-class accuracy and the confusion matrix
        (also a PNG); with test videos, the video-level accuracy too."""
        test = moving.load_clip_split(data_cfg, "test")
        scores = self.test_scores(cfg, run_dir, model, test, self.classes)
        scores["test/chance"] = 1 / self.num_classes
        if data_cfg.videos_test:
            videos, labels = moving.load_test_videos(data_cfg)
            batch = cfg.train.eval_batch_size
            scores |= video_scores(model, videos, labels, data_cfg.frames, batch)
        return scores

    def describe(self, run_dir: Path, summary: dict, test: dict) -> list[list[str]]:
        rows = super().describe(run_dir, summary, test)
        rows[-2] = ["test acc", f"{test['test/acc']:.4f} on {test['test/examples']} clips"]
        rows.append(["chance", f"{test['test/chance']:.4f}"])
        if "test/video_acc" in test:
            rows.append(
                [
                    "video acc",
                    f"{test['test/video_acc']:.4f} on {test['test/videos']} videos of "
                    f"{test['test/clips_per_video']} clips",
                ]
            )
        return rows
