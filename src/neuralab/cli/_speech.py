"""The CLI's speech commands (issue 23): ``data info|show spoken-digits|spoken-commands``
and ``predict`` of a CTC run on WAV files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from neuralab.cli.common import print_json, table
from neuralab.errors import UserError

SNR_BINS = (5, 10, 15, 20, 25, 30)


def speech_config(args: argparse.Namespace) -> Any:
    """The data config of ``args.name``, with the sizes the user asked for (``--test`` sizes
    val and both test sets alike)."""
    import dataclasses

    from neuralab.config import DataConfig

    cfg = DataConfig(name=args.name, data_dir=args.data_dir or "")
    sizes = {
        "utterances_train": args.train,
        "utterances_val": args.test,
        "utterances_test": args.test,
    }
    for key, value in sizes.items():
        if value is not None:
            if value < 1:
                raise UserError(f"--train and --test must be >= 1, got {value}")
            cfg = dataclasses.replace(cfg, **{key: value})
    return cfg


def speech_info(args: argparse.Namespace) -> dict:
    """Per split: its voices (engine:voice, and the speakers behind them), utterances, hours
    of audio, the SNR histogram and the noise kinds; the sets are built if not cached."""
    import numpy as np

    from neuralab.data import speech

    cfg = speech_config(args)
    info: dict[str, Any] = {
        "name": args.name,
        "vocabulary": " ".join(speech.vocabulary(args.name)),
        "synthesizers": speech.synthesizer_versions(),
    }
    for split in speech.SPLITS:
        found, path = speech.speech_set(
            args.name, split, speech.split_size(cfg, split), 0, args.data_dir
        )
        voices = [speech.VOICES[i] for i in speech.voices_of(split)]
        counts, _ = np.histogram(found.snr, bins=SNR_BINS)
        info[split] = {
            "voices": ", ".join(v.label for v in voices),
            "speakers": ", ".join(sorted({v.speaker for v in voices})),
            "utterances": len(found),
            "hours": round(found.seconds() / 3600, 3),
            "snr_db": {
                f"{a}-{b}": int(c) for a, b, c in zip(SNR_BINS, SNR_BINS[1:], counts, strict=False)
            },
            "noise": {k: int((found.noise == i).sum()) for i, k in enumerate(speech.NOISES)},
            "file": str(path),
        }
    return info


def show_speech(args: argparse.Namespace) -> int:
    """A PNG of ``--n`` utterances (waveform over log-mel spectrogram) and the first one as a
    WAV beside it."""
    import torch

    from neuralab.data import audio, speech, wav
    from neuralab.plots.speech import plot_spectrograms

    if not 1 <= args.n <= 16:
        raise UserError(f"--n must be in [1, 16] for speech, got {args.n}")
    speech.check_split(args.split)
    cfg = speech_config(args)
    found, _ = speech.speech_set(
        args.name, args.split, speech.split_size(cfg, args.split), 0, args.data_dir
    )
    picked = range(min(args.n, len(found)))
    waves = [found.waveform(i) for i in picked]
    feats = [audio.log_mel(torch.from_numpy(w), cfg.mels).numpy() for w in waves]
    titles = [
        f'"{found.texts[i]}" ({speech.VOICES[found.voices[i]].label}, '
        f"{speech.NOISES[found.noise[i]]} noise at {found.snr[i]:.0f} dB)"
        for i in picked
    ]
    out = plot_spectrograms(waves, feats, titles, Path(args.out))
    written = wav.write_wav(out.with_suffix(".wav"), waves[0])
    print(f"wrote {out}: {len(waves)} {args.split} utterances; and {written}: {titles[0]}")
    return 0


def predict_speech(args: argparse.Namespace, run_dir: Path, cfg: Any, model: Any) -> int:
    """Each WAV file's transcript (prefix beam search), one per line."""
    import torch

    from neuralab.data.audio import log_mel
    from neuralab.data.wav import SAMPLE_RATE, read_wav
    from neuralab.models.ctc import beam_decode
    from neuralab.tasks.ctc import BEAM, Labels

    if not args.images:
        raise UserError("give the WAV files to transcribe: neuralab predict RUN utterance.wav")
    labels = Labels(cfg.data.name, cfg.data.units)
    beam = BEAM if args.beam is None else args.beam
    out = []
    for path in args.images:
        wave, notes = read_wav(path)
        for note in notes:
            print(f"neuralab: {path}: {note}", file=sys.stderr)
        feats = log_mel(torch.from_numpy(wave), cfg.data.mels)[None]
        with torch.no_grad():
            logits, steps = model(feats, torch.tensor([feats.shape[1]]))
        text = labels.decode(beam_decode(logits, steps, beam)[0])
        out.append({"file": str(path), "transcript": text, "seconds": len(wave) / SAMPLE_RATE})
    if args.json:
        print_json({"run": str(run_dir), "predictions": out})
        return 0
    for item in out:
        print(item["transcript"] if len(out) == 1 else f"{item['file']}: {item['transcript']}")
    return 0


def make_speech(args: argparse.Namespace) -> int:
    """Synthesize (or find cached) every split of a speech set."""
    import time

    from neuralab.data import speech

    cfg = speech_config(args)
    for split in speech.SPLITS:
        start = time.perf_counter()
        found, path = speech.speech_set(
            args.name, split, speech.split_size(cfg, split), args.seed, args.data_dir
        )
        seconds = time.perf_counter() - start
        hours = found.seconds() / 3600
        print(f"{split}: {len(found)} utterances, {hours:.2f} h, in {path} ({seconds:.1f} s)")
    return 0


def print_speech_test(result: dict) -> int:
    """WER, CER and exact transcripts of the unseen voices (beam, greedy) and the seen."""
    rows = [
        [name, *(f"{result[prefix + k]:.2%}" for k in ("wer", "cer", "acc"))]
        for name, prefix in (
            (f"unseen voices, beam {result['test/beam']}", "test/"),
            ("unseen voices, greedy", "test/greedy_"),
            (f"seen voices, beam {result['test/beam']}", "test_seen/"),
        )
    ]
    print(f"{result['test/examples']} utterances per test set:")
    print(table(rows, ["voices", "WER", "CER", "exact"]))
    print(f"most frequent transcript: exact {result['test/chance_acc']:.2%}")
    return 0
