"""``neuralab predict`` and ``probe attention`` on a captioning run: the caption of each
image file (read as a colour scene and resized to the run's canvas), and Show-Attend-Tell's
picture of where the decoder looked for every word."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from neuralab.cli.common import print_json, table
from neuralab.data.captions import Vocabulary
from neuralab.data.image_files import read_image
from neuralab.errors import UserError
from neuralab.models.base import unwrap
from neuralab.models.captioner import Captioner
from neuralab.models.search import decode


def _scene(cfg: Any, path: str) -> torch.Tensor:
    """The image file as a (1, 3, S, S) scene: any size or mode is converted and resized."""
    size = (cfg.data.scene_size, cfg.data.scene_size)
    return read_image(path, channels=3, size=size, dark_background=False)[0].unsqueeze(0)


def caption(model: Any, image: torch.Tensor, beam: int, temperature: float, seed: int):
    """(word ids, attention weights) of one (1, 3, S, S) image: sampled at ``temperature``
    if it is above 0, else by beam search (beam 1: greedy)."""
    captioner = unwrap(model, Captioner)
    generator = torch.Generator().manual_seed(seed)
    return decode(captioner, image, captioner.config.max_len, beam, temperature, generator)[0]


def check_options(args: argparse.Namespace) -> None:
    if args.beam is not None and args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")


def predict_captions(args: argparse.Namespace, run_dir: Path, cfg: Any, model: Any) -> int:
    """Each image file's caption on stdout (``--json``: ``{"caption": ...}`` per image)."""
    check_options(args)
    vocab = Vocabulary.load(run_dir / "vocab.json")
    out = []
    for path in args.images:
        ids, _ = caption(model, _scene(cfg, path), args.beam or 1, args.temperature, args.seed)
        out.append({"image": str(path), "caption": vocab.decode(ids)})
    if args.json:
        print_json(out[0] if len(out) == 1 else {"run": str(run_dir), "predictions": out})
        return 0
    for item in out:
        print(item["caption"] if len(out) == 1 else f"{item['image']}: {item['caption']}")
    return 0


def probe_caption_attention(args: argparse.Namespace, run_dir: Path, cfg: Any, model: Any) -> int:
    """The greedy caption of one image and the attention picture of its words."""
    from neuralab.plots import plot_caption_attention

    if not unwrap(model, Captioner).attends:
        raise UserError(
            f"{run_dir} holds {cfg.model.name}, which does not attend; attention pictures "
            "need a caption_attention run"
        )
    vocab = Vocabulary.load(run_dir / "vocab.json")
    image = _scene(cfg, args.image)
    ids, alphas = caption(model, image, 1, 0.0, 0)
    words = [vocab.words[i] for i in ids]
    out = Path(args.out or f"{Path(args.image).stem}_attention.png")
    plot_caption_attention(image[0], words, alphas, out)
    result = {"image": args.image, "caption": " ".join(words), "png": str(out)}
    if args.json:
        print_json(result)
    else:
        print(f"{result['caption']}\nattention over each word: {out}")
    return 0


def print_caption_test(result: dict) -> int:
    """BLEU, CIDEr-D and fact scores of greedy decoding and beam search on both test splits."""
    from neuralab.tasks.caption import TEST_BEAM

    keys = ("bleu1", "bleu4", "cider", "fact_precision", "fact_recall", "fact_f1")
    beam = f"beam{TEST_BEAM}"
    rows = []
    for split, name in (("test", "i.i.d."), ("test_comp", "compositional")):
        for decoding, prefix in (("greedy", ""), (beam, f"{beam}_")):
            values = [f"{result[f'{split}/{prefix}{k}']:.3f}" for k in keys]
            rows.append([f"{name} ({result[f'{split}/examples']})", decoding, *values])
    print(table(rows, ["test split (scenes)", "decoding", *keys]))
    print(f"BLEU by sacreBLEU: {result['test/bleu_signature']}")
    return 0
