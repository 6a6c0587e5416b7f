"""fashion-scenes-captions (issue 20): captioning with and without attention, against honest
baselines.

Prints one JSON object per result (machine included): for the chosen preset, BLEU-1..4,
CIDEr-D and the grounded fact precision/recall/F1 on the i.i.d. and the compositional test
splits, for greedy decoding and beam search (beam 3), the greedy captions' facts by kind
(count, colour, size, relation: where they go wrong), how often an item's class and colour
are named together (when training never showed that pair or did; by the item's size) and
which classes are named in place of which, its training wall time and its captions per
second; beside them three baselines scored the same way:

- one caption for every scene: of the first references of 100 training scenes, the one with
  the best fact F1 on 500 other training scenes (what ignoring the image can reach, roughly);
- nearest neighbour by raw pixels (Devlin et al. 2015): each test scene gets the first
  reference of the training scene closest in 16×16 RGB (cosine), over all training scenes;
- one reference against the other four: how far the references themselves agree (a ceiling
  for BLEU and CIDEr; the facts are exact by construction).

``--class-ceiling`` adds a ceiling for the facts: each test scene described by the grammar
from its true layout (positions, colours, sizes exact) with every item's class named by a
CNN trained on the items' true crops of the training scenes (benchmarks/scenes.py's crop
classifier, a few minutes more): what a captioner that recognises items as well as a
dedicated classifier given perfect localisation would score.

Targets (2 CPU cores): attention BLEU-4 >= 0.50 and fact F1 >= 0.90 on the i.i.d. split within
30 minutes of training, fact F1 >= 0.75 on the compositional split; attention ahead of
NeuralTalk by >= 5 points of compositional fact F1; beam 3 >= greedy on CIDEr.

    python benchmarks/captioning.py                                  # scenes_caption_attention
    python benchmarks/captioning.py --preset scenes_caption_lstm
    python benchmarks/captioning.py --run runs/x                     # a run already trained
    python benchmarks/captioning.py train.epochs=2                   # overrides of the preset
    python benchmarks/captioning.py --run runs/x --class-ceiling
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from scenes import crop_probs, crops, train_crop_cnn
from vision import emit, trained_or_given

from neuralab import config
from neuralab.data import captions
from neuralab.data.caption_grammar import (
    NOUNS,
    describe,
    fact_breakdown,
    fact_scores,
    parse,
)
from neuralab.tasks.caption import CaptionTask, caption_all
from neuralab.tasks.caption_metrics import bleu, cider_d
from neuralab.train import load_model

CLASSES = [nouns[0][0] for nouns in NOUNS]
KEYS = ("bleu1", "bleu4", "cider", "fact_precision", "fact_recall", "fact_f1")


def scores(written: list[str], split: captions.CaptionSplit) -> dict:
    found = {**bleu(written, split.references), "cider": cider_d(written, split.references)}
    found.update(fact_scores(written, split.things))
    return {k: round(found[k], 4) for k in KEYS}


def class_and_colour_named(written: list[str], split: captions.CaptionSplit) -> dict:
    """How often an item's class and colour are named together: for the items whose (class,
    colour) training never showed and for the others, and by the item's size; and the
    commonest wrong classes named with an item's colour: (true class, said class) counts."""
    novel = {"held_out": [0, 0], "seen": [0, 0]}
    by_size = {size: [0, 0] for size in captions.SIZES}
    wrong: Counter = Counter()
    for caption, things in zip(written, split.things, strict=True):
        mentions = [(m.cls, m.colour) for m in parse(caption).mentions]
        for t in things:
            named = (t.cls, t.colour) in mentions
            held = (t.cls, t.colour) in captions.HELD_OUT_COLOURS
            for tally in (novel["held_out" if held else "seen"], by_size[t.size]):
                tally[0] += named
                tally[1] += 1
            said = [cls for cls, colour in mentions if colour == t.colour]
            if said and t.cls not in said:
                wrong[(CLASSES[t.cls], CLASSES[said[0]])] += 1
    return {
        **{k: round(hit / n, 4) if n else None for k, (hit, n) in novel.items()},
        "by_size": {k: round(hit / n, 4) if n else None for k, (hit, n) in by_size.items()},
        "confusions": [[*pair, n] for pair, n in wrong.most_common(8)],
    }


def pixels(images: torch.Tensor) -> torch.Tensor:
    small = F.interpolate(images.float() / 255, size=(16, 16), mode="area").flatten(1)
    return F.normalize(small - small.mean(1, keepdim=True), dim=1)


def baselines(train: captions.CaptionSplit, test: dict[str, captions.CaptionSplit]) -> dict:
    candidates = [refs[0] for refs in train.references[:100]]
    things = train.things[100:600]
    best = max(candidates, key=lambda c: fact_scores([c] * len(things), things)["fact_f1"])
    bank = pixels(train.images)
    out = {"one_caption": {"caption": best}, "nearest_neighbour_pixels": {}, "reference": {}}
    for name, split in test.items():
        out["one_caption"][name] = scores([best] * len(split.things), split)
        nearest = (pixels(split.images) @ bank.T).argmax(1)
        written = [train.references[int(i)][0] for i in nearest]
        out["nearest_neighbour_pixels"][name] = scores(written, split)
        held = captions.CaptionSplit(split.images, split.things, [r[1:] for r in split.references])
        out["reference"][name] = scores([r[0] for r in split.references], held)
    return out


def boxes(split: captions.CaptionSplit) -> torch.Tensor:
    """(N, 3, 5) rows of x0, y0, x1, y1, class per item (class -1: no item), as
    benchmarks/scenes.py's ``crops`` reads them."""
    rows = torch.full((len(split.things), 3, 5), -1.0)
    for n, things in enumerate(split.things):
        for k, t in enumerate(things):
            rows[n, k] = torch.tensor([*t.box, t.cls])
    return rows


def class_ceiling(train: captions.CaptionSplit, test: dict[str, captions.CaptionSplit]) -> dict:
    """The facts of captions written by the grammar from each test scene's true layout, with
    each item's class named by a CNN trained on the training scenes' item crops."""
    features, classes = crops(train.images, boxes(train))
    model, train_s = train_crop_cnn(features, classes)
    out = {"train_crops": len(features), "train_s": round(train_s, 1)}
    for name, split in test.items():
        features, classes = crops(split.images, boxes(split))
        predicted = crop_probs(model, features).argmax(1)
        named, written, rng = iter(predicted.tolist()), [], np.random.default_rng(0)
        for things in split.things:
            written.append(describe([t._replace(cls=next(named)) for t in things], rng))
        out[name] = {
            "crop_accuracy": round(float((predicted == classes).float().mean()), 4),
            **scores(written, split),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the preset")
    parser.add_argument(
        "--preset",
        default="scenes_caption_attention",
        choices=["scenes_caption_attention", "scenes_caption_lstm"],
    )
    parser.add_argument("--run", help="a trained run of the preset to measure instead")
    parser.add_argument("--out", default="runs/bench", help="where new runs go")
    parser.add_argument("--no-baselines", action="store_true", help="measure the model only")
    parser.add_argument(
        "--class-ceiling",
        action="store_true",
        help="also the facts with true layouts and a crop CNN's classes (a few minutes more)",
    )
    args = parser.parse_args()

    cfg = config.load(args.preset, args.overrides)
    cfg, run_dir, results = trained_or_given(args.preset, cfg, args.run, args.out)

    task = CaptionTask()
    task.vocab = captions.Vocabulary.load(run_dir / "vocab.json")
    model = load_model(run_dir)
    test = {s: captions.load_split(cfg.data, s) for s in ("test", "test_comp")}
    measured = {}
    for name, split in test.items():
        start = time.perf_counter()
        greedy = [task.vocab.decode(i) for i in caption_all(model, split.images, 200)]
        per_s = len(greedy) / (time.perf_counter() - start)
        beam = [task.vocab.decode(i) for i in caption_all(model, split.images, 200, beam=3)]
        measured[name] = {
            "scenes": len(split.things),
            "greedy": scores(greedy, split),
            "beam3": scores(beam, split),
            "greedy_facts_by_kind": fact_breakdown(greedy, split.things),
            "greedy_class_and_colour_named": class_and_colour_named(greedy, split),
            "greedy_captions_per_s": round(per_s, 1),
        }
    emit(
        {
            "what": f"{cfg.model.name} on {cfg.data.name}",
            "run": str(run_dir),
            **measured,
            "train/wall_s": results.get("train/wall_s"),
            "train/steps": results.get("train/steps"),
            "params": model.num_params(),
            "target": "attention: BLEU-4 >= 0.50, fact F1 >= 0.90 (i.i.d.), >= 0.75 "
            "(compositional) within 30 minutes; beam 3 >= greedy on CIDEr (issue 20)",
        }
    )
    if args.no_baselines and not args.class_ceiling:
        return
    train = captions.load_split(cfg.data, "train")
    if not args.no_baselines:
        emit({"what": "baselines", **baselines(train, test)})
    if args.class_ceiling:
        emit({"what": "class ceiling (true layout, crop CNN's classes)",
              **class_ceiling(train, test)})  # fmt: skip


if __name__ == "__main__":
    main()
