"""``spoken-digits`` and ``spoken-commands``: speech rendered by real synthesizers, with the
test voices never heard in training.

No speech corpus ships in a Debian package, but speech synthesizers do: ``espeak-ng`` (a
formant synthesizer: accents, each with male, female and Klatt variants), ``flite`` (CMU's
voices awb, rms, slt, kal, kal16) and ``festival`` (the Kal and Ked diphone voices and the
HTS voice of CMU Arctic's slt). An utterance is a text (1–7 digits like TIDIGITS, or one of the
commands like Speech Commands) spoken by a voice at a random rate and pitch, resampled
to 16 kHz, sped up or slowed by a random factor in [0.9, 1.1] (pitch and
tempo together, Ko et al. 2015), padded with up to 0.15 s of silence at each end, mixed with
white, pink or babble noise (three other utterances of the same split) at a random SNR in
``SNR`` dB, and scaled by a random gain of -12 to 0 dB.

The voices are split by speaker, never by utterance (``VOICES``):

- ``train``: espeak-ng's en-us, en-gb, en-gb-x-rp, en-gb-scotland and en-029, flite's awb
  and rms, and festival's ked_diphone;
- ``val``: espeak-ng's en-gb-x-gbclan, and the Kal speaker in all three engines (flite kal
  and kal16, festival kal_diphone);
- ``test``, voices never heard in training nor validation: espeak-ng's en-gb-x-gbcwmd,
  flite's slt and festival's cmu_us_slt_arctic_hts (the same speaker, a different engine);
- ``test_seen``: new utterances by the training voices.

The recorded voices in training and validation are all men's, so outside the test their
pitch is drawn too: flite's and festival's mean F0 is scaled by a factor log-uniform in
``F0_RANGE``, from a low man's voice to a woman's (flite's rms ignores it: his F0 comes
from his own accent model). The test voices speak at their own pitch.

A set is deterministic from (name, split, size, seed, the synthesizers' versions), built on
first use (the synthesizers run as subprocesses, in parallel) and cached under a hash of all
of these; a missing synthesizer is a one-line error naming its Debian package.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from neuralab.data.wav import SAMPLE_RATE, read_wav, resample
from neuralab.errors import UserError

if TYPE_CHECKING:
    from neuralab.config import DataConfig

GENERATOR_VERSION = 3  # bump when the same settings and seed would draw different audio
NAMES = ("spoken-digits", "spoken-commands")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = (
    *("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"),
    *("forward", "backward", "follow", "learn", "wow", "happy", "house", "bird", "cat", "dog"),
    *("bed", "tree", "visual", "turn left", "turn right", "go back", "lights on"),
    *("lights off", "stop now", "speed up"),
)
SPLITS = ("train", "val", "test", "test_seen")
SNR = (5.0, 30.0)  # dB, uniform
F0_RANGE = (0.85, 2.0)  # the recorded voices' mean F0 scaled by this much, log-uniform
NOISES = ("white", "pink", "babble")
MAX_DIGITS = 7
ESPEAK_VARIANTS = (
    *(f"m{i}" for i in range(1, 8)),
    *(f"f{i}" for i in range(1, 6)),
    *("klatt", "klatt2", "klatt3", "klatt4"),
)
FESTIVAL_VOICES = Path("/usr/share/festival/voices")
PACKAGES = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
}


class Voice(NamedTuple):
    engine: str  # espeak-ng, flite, festival
    name: str  # the engine's name of the voice
    speaker: str  # who it is: the same speaker may be voiced by several engines
    split: str  # train, val or test

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.name}"


VOICES = (
    *(
        Voice("espeak-ng", v, f"espeak-{v}", "train")
        for v in ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029")
    ),
    Voice("flite", "awb", "awb", "train"),
    Voice("flite", "rms", "rms", "train"),
    Voice("festival", "ked_diphone", "ked", "train"),
    Voice("espeak-ng", "en-gb-x-gbclan", "espeak-en-gb-x-gbclan", "val"),
    Voice("flite", "kal", "kal", "val"),
    Voice("flite", "kal16", "kal", "val"),
    Voice("festival", "kal_diphone", "kal", "val"),
    Voice("espeak-ng", "en-gb-x-gbcwmd", "espeak-en-gb-x-gbcwmd", "test"),
    Voice("flite", "slt", "slt", "test"),
    Voice("festival", "cmu_us_slt_arctic_hts", "slt", "test"),
)


def voices_of(split: str) -> list[int]:
    """Indices in ``VOICES`` of the voices that speak ``split``."""
    check_split(split)
    heard = "train" if split == "test_seen" else split
    return [i for i, v in enumerate(VOICES) if v.split == heard]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"speech sets have the splits {', '.join(SPLITS)}, not {split!r}")


def vocabulary(name: str) -> tuple[str, ...]:
    """The words of ``name``'s transcripts."""
    if name not in NAMES:
        raise UserError(f"speech sets are {', '.join(NAMES)}, not {name!r}")
    return (
        DIGITS
        if name == "spoken-digits"
        else tuple(sorted({w for c in COMMANDS for w in c.split()}))
    )


class Utterances(NamedTuple):
    """N utterances: their 16 kHz int16 samples end to end, and what made each one."""

    audio: np.ndarray  # (total samples,) int16
    offsets: np.ndarray  # (N + 1,) int64: utterance i is audio[offsets[i]:offsets[i + 1]]
    texts: np.ndarray  # (N,) str: the transcript
    voices: np.ndarray  # (N,) int64: index in VOICES
    snr: np.ndarray  # (N,) float32 dB
    noise: np.ndarray  # (N,) int64: index in NOISES

    def __len__(self) -> int:
        return len(self.texts)

    def waveform(self, i: int) -> np.ndarray:
        """Utterance ``i`` as float32 samples in [-1, 1]."""
        return self.audio[self.offsets[i] : self.offsets[i + 1]].astype(np.float32) / 32768

    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def draw_texts(name: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` transcripts: 1–``MAX_DIGITS`` uniform digits, or uniform commands."""
    if name == "spoken-digits":
        lengths = rng.integers(1, MAX_DIGITS + 1, n)
        return [" ".join(DIGITS[d] for d in rng.integers(0, 10, k)) for k in lengths]
    return [COMMANDS[i] for i in rng.integers(0, len(COMMANDS), n)]


def synthesizer_versions() -> dict[str, str]:
    """Each engine's version line (part of the cache key); a one-line error naming the
    Debian packages of a missing one."""
    versions = {}
    for engine, flag in (
        ("espeak-ng", "--version"),
        ("flite", "--version"),
        ("festival", "--version"),
    ):
        if shutil.which(engine) is None:
            raise UserError(
                f"the speech synthesizer {engine} is not installed, so the speech sets cannot be "
                f"built: apt-get install {PACKAGES[engine]}"
            )
        out = subprocess.run([engine, flag], capture_output=True, text=True, check=False)
        lines = (out.stdout or out.stderr).strip().splitlines() or ["unknown"]
        versions[engine] = next((x for x in lines if "version" in x.lower()), lines[0])
    for voice in (v.name for v in VOICES if v.engine == "festival"):
        if not list(FESTIVAL_VOICES.glob(f"*/{voice}")):
            raise UserError(
                f"festival's voice {voice} is not installed in {FESTIVAL_VOICES}, so the speech "
                f"sets cannot be built: apt-get install {PACKAGES['festival']}"
            )
    return versions


class Job(NamedTuple):
    text: str
    voice: Voice
    stretch: float  # duration multiplier (1: the voice's own rate)
    pitch: int  # espeak-ng's pitch, 0-99 (others ignore it)
    f0: float  # flite's and festival's mean F0 multiplier (1: the voice's own)
    variant: str  # espeak-ng's variant (others ignore it)
    out: Path


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"{what} failed ({done.returncode}): {done.stderr.strip()[:200]}")


def _speak_one(job: Job) -> None:
    v = job.voice
    if v.engine == "espeak-ng":
        words_per_minute = str(round(175 / job.stretch))
        cmd = ["espeak-ng", "-v", f"{v.name}+{job.variant}", "-s", words_per_minute]
        _run([*cmd, "-p", str(job.pitch), "-w", str(job.out), job.text], "espeak-ng")
    else:
        cmd = ["flite", "-voice", v.name, "--setf", f"duration_stretch={job.stretch:.3f}"]
        cmd += ["--setf", f"f0_shift={job.f0:.3f}", "-t", job.text, "-o", str(job.out)]
        _run(cmd, "flite")


def _speak_festival(jobs: list[Job], script: Path) -> None:
    lines = []
    for job in jobs:
        lines.append(f"(voice_{job.voice.name})")
        lines.append(f"(Parameter.set 'Duration_Stretch {job.stretch:.3f})")
        if job.voice.name.endswith("_diphone"):  # Ked's own: 105 Hz, sd 15 (Kal's: sd 14)
            mean, sd = 105 * job.f0, 15 * job.f0
            lines.append(
                f"(set! int_lr_params '((target_f0_mean {mean:.1f}) (target_f0_std {sd:.1f})"
                " (model_f0_mean 170) (model_f0_std 34)))"
            )
        lines.append(
            f'(utt.save.wave (utt.synth (Utterance Text "{job.text}")) "{job.out}" \'riff)'
        )
    script.write_text("\n".join(lines) + "\n")
    _run(["festival", "-b", str(script)], "festival")


def synthesize(jobs: list[Job], workers: int) -> list[np.ndarray]:
    """Each job's audio, mono float32 at 16 kHz, the synthesizers run in ``workers`` threads
    (festival in batches of 32 utterances per process: its start-up is most of its time)."""
    festival = [j for j in jobs if j.voice.engine == "festival"]
    tasks = [lambda j=j: _speak_one(j) for j in jobs if j.voice.engine != "festival"]
    for start in range(0, len(festival), 32):
        chunk = festival[start : start + 32]
        tasks.append(lambda c=chunk: _speak_festival(c, c[0].out.with_suffix(".scm")))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for future in [pool.submit(t) for t in tasks]:
            future.result()
    return [read_wav(j.out)[0] for j in jobs]


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of 1/f noise (white noise shaped in the frequency domain), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    spectrum /= np.sqrt(np.maximum(freqs, 1.0))
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def mix(
    clean: np.ndarray, kind: int, snr: float, others: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """``clean`` plus noise of kind ``NOISES[kind]`` at ``snr`` dB (babble: the sum of
    ``others``, each looped to the length of ``clean``)."""
    n = len(clean)
    if NOISES[kind] == "white":
        noise = rng.standard_normal(n)
    elif NOISES[kind] == "pink":
        noise = pink_noise(n, rng)
    else:
        noise = sum(np.resize(o, n) for o in others)
    signal_power = np.mean(clean.astype(np.float64) ** 2) + 1e-12
    noise_power = np.mean(noise**2) + 1e-12
    scale = np.sqrt(signal_power / (noise_power * 10 ** (snr / 10)))
    return (clean + scale * noise).astype(np.float32)


def f0_factors(split: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """The recorded voices' F0 multipliers: log-uniform in ``F0_RANGE``, 1 in the test."""
    factors = np.exp(rng.uniform(*np.log(F0_RANGE), n))
    return np.ones(n) if split == "test" else factors


def generate(name: str, split: str, n: int, seed: int, workers: int) -> Utterances:
    """``n`` utterances of ``name`` spoken by ``split``'s voices (see the module's text)."""
    rng = np.random.default_rng([seed, NAMES.index(name), SPLITS.index(split)])
    texts = draw_texts(name, n, rng)
    voices = rng.choice(voices_of(split), n)
    stretch = rng.uniform(0.8, 1.25, n)
    pitch = rng.integers(30, 71, n)
    variants = rng.integers(0, len(ESPEAK_VARIANTS), n)
    speed = rng.uniform(0.9, 1.1, n)
    pads = rng.integers(0, int(0.15 * SAMPLE_RATE) + 1, (n, 2))
    kinds, snr = rng.integers(0, len(NOISES), n), rng.uniform(*SNR, n).astype(np.float32)
    gain = 10 ** (rng.uniform(-12, 0, n) / 20)
    f0 = f0_factors(split, n, rng)
    with tempfile.TemporaryDirectory(prefix="neuralab-speech-") as tmp:
        jobs = [
            Job(
                texts[i],
                VOICES[voices[i]],
                stretch[i],
                int(pitch[i]),
                float(f0[i]),
                ESPEAK_VARIANTS[variants[i]],
                Path(tmp) / f"u{i}.wav",
            )
            for i in range(n)
        ]
        spoken = synthesize(jobs, workers)
    clean = []
    for i, audio in enumerate(spoken):
        # resampled to 16 kHz·speed (a multiple of 100 Hz: a short polyphase filter), played
        # at 16 kHz: sped up or slowed by about ``speed``
        audio = resample(audio, 100 * round(SAMPLE_RATE * speed[i] / 100))
        audio = audio / (np.abs(audio).max() + 1e-9) * 0.5
        clean.append(np.pad(audio, pads[i]))
    out = []
    for i, audio in enumerate(clean):
        others = [clean[j] for j in rng.choice(n, 3)] if n > 1 else [audio]
        noisy = mix(audio, kinds[i], float(snr[i]), others, rng) * gain[i]
        out.append((np.clip(noisy, -1, 1) * 32767).round().astype(np.int16))
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.cumsum([len(a) for a in out])
    return Utterances(
        np.concatenate(out) if out else np.zeros(0, np.int16),
        offsets,
        np.array(texts, dtype=str),
        voices.astype(np.int64),
        snr,
        kinds.astype(np.int64),
    )


def cache_key(settings: dict) -> str:
    text = json.dumps({"version": GENERATOR_VERSION, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def speech_set(
    name: str, split: str, n: int, seed: int = 0, data_dir: str | Path | None = None
) -> tuple[Utterances, Path]:
    """(utterances, cache file) of ``split``: read from the cache (``data_dir``/``name``,
    else the user cache), else synthesized and cached."""
    from neuralab.data.scenes import load_file, save
    from neuralab.data.store import cache_root

    vocabulary(name)
    check_split(split)
    if n < 1:
        raise UserError(f"a speech set needs at least 1 utterance, got {n}")
    settings = {"name": name, "split": split, "n": n, "seed": seed}
    key = cache_key({**settings, "synthesizers": synthesizer_versions()})
    root = Path(data_dir).expanduser() if data_dir is not None else cache_root()
    path = root / name / f"{split}-{n}-{key}.npz"
    if path.exists():
        return load_file(path, Utterances, "speech set"), path
    found = generate(name, split, n, seed, os.cpu_count() or 1)
    save(found, path, compress=False)
    return found, path


def split_size(cfg: DataConfig, split: str) -> int:
    """How many utterances ``split`` has under ``cfg``."""
    return {
        "train": cfg.utterances_train,
        "val": cfg.utterances_val,
        "test": cfg.utterances_test,
        "test_seen": cfg.utterances_test,
    }[split]


def load_speech_split(cfg: DataConfig, split: str) -> Utterances:
    """The utterances of ``split`` of ``cfg.name``, at the sizes ``cfg`` names."""
    check_split(split)
    return speech_set(cfg.name, split, split_size(cfg, split), 0, cfg.data_dir or None)[0]
