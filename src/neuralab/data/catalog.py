"""The registered datasets: classes, shapes, canonical files and their sha256.

Checksums are of the canonical downloads, taken from public records (md5s as
published by the dataset authors and torchvision agree with them):
- Fashion-MNIST: tensorflow/datasets url_checksums/fashion_mnist.txt (also in
  torchvision's prototype mnist.py); Xiao et al., 2017, arXiv:1708.07747.
- MNIST: tensorflow/datasets url_checksums/mnist.txt (same bytes on every mirror;
  also torchvision's prototype mnist.py); LeCun et al., 1998.
- CIFAR-10 python: the ``file_hash`` in Keras' datasets/cifar10.py; Krizhevsky, 2009.
- tiny shakespeare: karpathy/char-rnn's data/tinyshakespeare/input.txt (the file nanoGPT's
  shakespeare_char downloads), 1,115,394 bytes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from neuralab.data.bible import GENRES, PAIRS, find_module
from neuralab.data.cifar import SOURCES, read_cifar10
from neuralab.data.fortunes import CATEGORIES, find_fortunes
from neuralab.data.idx import read_mnist_like
from neuralab.data.spec import DATASETS, DatasetSpec, RawData, RemoteFile
from neuralab.data.speech import vocabulary as speech_vocabulary
from neuralab.errors import UserError


def _idx_files(
    mirrors: tuple[str, ...], checksums: dict[str, tuple[int, str]]
) -> tuple[RemoteFile, ...]:
    """One RemoteFile per IDX ``.gz``, also accepted decompressed."""
    return tuple(
        RemoteFile(name, tuple(m + name for m in mirrors), sha256, size, also=(name[:-3],))
        for name, (size, sha256) in checksums.items()
    )


FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
FASHION_CHECKSUMS = {  # name: (size in bytes, sha256)
    "train-images-idx3-ubyte.gz": (
        26421880,
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    ),
    "train-labels-idx1-ubyte.gz": (
        29515,
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    ),
    "t10k-images-idx3-ubyte.gz": (
        4422102,
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    ),
    "t10k-labels-idx1-ubyte.gz": (
        5148,
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ),
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirror
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": (
        9912422,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train-labels-idx1-ubyte.gz": (
        28881,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "t10k-images-idx3-ubyte.gz": (
        1648877,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "t10k-labels-idx1-ubyte.gz": (
        4542,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}

CIFAR10_FILE = RemoteFile(
    "cifar-10-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    170498071,
    also=tuple(name for name, _ in SOURCES[1:]),  # extracted, or the binary version
)


def _sklearn_data_dir() -> Path:
    """Where scikit-learn keeps its bundled data, found without importing it (a second)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("scikit-learn is not installed (pip install scikit-learn)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def _read_digits(directory: Path) -> RawData:
    """scikit-learn's copy of the UCI optical digits test set: 1797 8x8 images, values 0..16."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    return RawData(images, digits.target.astype(np.int64), None, None)


def _read_tinyshakespeare(directory: Path) -> str:
    from neuralab.data.text import read_tinyshakespeare  # PyTorch: only when it is read

    return read_tinyshakespeare(directory)


DIGIT_NAMES = tuple(str(d) for d in range(10))

DATASETS.add(
    "digits",
    DatasetSpec(
        name="digits",
        classes=DIGIT_NAMES,
        channels=1,
        height=8,
        width=8,
        read=_read_digits,
        how_to_get="bundled in scikit-learn, always present",
        crop_pad=1,
        max_value=16,
        bundled=_sklearn_data_dir,
    ),
)
DATASETS.add(
    "fashion-mnist",
    DatasetSpec(
        name="fashion-mnist",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        channels=1,
        height=28,
        width=28,
        read=read_mnist_like,
        how_to_get="apt-get install dataset-fashion-mnist, or `neuralab data fetch fashion-mnist`",
        files=_idx_files(FASHION_MIRRORS, FASHION_CHECKSUMS),
        crop_pad=2,
        hflip=True,
    ),
)
DATASETS.add(
    "mnist",
    DatasetSpec(
        name="mnist",
        classes=DIGIT_NAMES,
        channels=1,
        height=28,
        width=28,
        read=read_mnist_like,
        how_to_get="`neuralab data fetch mnist`",
        files=_idx_files(MNIST_MIRRORS, MNIST_CHECKSUMS),
        crop_pad=2,
    ),
)
DATASETS.add(
    "cifar10",
    DatasetSpec(
        name="cifar10",
        classes=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        channels=3,
        height=32,
        width=32,
        read=read_cifar10,
        how_to_get="`neuralab data fetch cifar10` (170 MB)",
        files=(CIFAR10_FILE,),
        crop_pad=4,
        hflip=True,
    ),
)

DATASETS.add(
    "tinyshakespeare",
    DatasetSpec(
        name="tinyshakespeare",
        classes=(),
        channels=0,
        height=0,
        width=0,
        read=_read_tinyshakespeare,
        how_to_get="`neuralab data fetch tinyshakespeare` (1.1 MB, github.com/karpathy/char-rnn)",
        files=(
            RemoteFile(
                "input.txt",
                (
                    "https://raw.githubusercontent.com/karpathy/char-rnn/master/"
                    "data/tinyshakespeare/input.txt",
                ),
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                1115394,
            ),
        ),
        kind="text",
    ),
)


def _generated(directory: Path) -> RawData:
    raise UserError(f"this dataset is generated on first use, not read from {directory}")


for _scenes, _source in (("fashion-scenes", "fashion-mnist"), ("mnist-scenes", "mnist")):
    DATASETS.add(
        _scenes,
        DatasetSpec(
            name=_scenes,
            classes=DATASETS.get(_source).classes,
            channels=3,
            height=96,
            width=96,
            read=_generated,
            how_to_get=f"generated from {_source} on first use, or `neuralab data make {_scenes}`",
            kind="scenes",
        ),
    )

DATASETS.add(
    "fashion-scenes-captions",
    DatasetSpec(
        name="fashion-scenes-captions",
        classes=DATASETS.get("fashion-mnist").classes,
        channels=3,
        height=64,
        width=64,
        read=_generated,
        how_to_get="generated from fashion-mnist on first use (neuralab.data.captions)",
        kind="captions",
    ),
)

DATASETS.add(
    "moving-fashion",
    DatasetSpec(
        name="moving-fashion",
        classes=(
            "left",
            "right",
            "up",
            "down",
            "clockwise",
            "anticlockwise",
            "grow",
            "shrink",
            "up-right",
            "down-left",
        ),
        channels=1,
        height=64,
        width=64,
        read=_generated,
        how_to_get="generated from fashion-mnist on first use (neuralab.data.moving)",
        kind="clips",
    ),
)


def _labelled_text(directory: Path) -> RawData:
    raise UserError(f"texts are read by neuralab.data.bible and .fortunes, not {directory}")


def _sword_web() -> Path:
    return find_module("web")


def _sword_pair(name: str) -> Callable[[], Path]:
    def find() -> Path:
        return [find_module(t) for t in PAIRS[name]][-1]

    return find


DATASETS.add(
    "bible-genre",
    DatasetSpec(
        name="bible-genre",
        classes=tuple(GENRES),
        channels=1,
        height=1,
        width=1,
        read=_labelled_text,
        how_to_get="apt-get install sword-text-web (the World English Bible, public domain)",
        bundled=_sword_web,
        kind="labelled-text",
    ),
)

DATASETS.add(
    "fortunes",
    DatasetSpec(
        name="fortunes",
        classes=CATEGORIES,
        channels=1,
        height=1,
        width=1,
        read=_labelled_text,
        how_to_get="apt-get install fortunes fortunes-min",
        bundled=find_fortunes,
        kind="labelled-text",
    ),
)

for _name, _what, _packages in (
    (
        "bible-en-es",
        "English (WEB) to Spanish (Reina-Valera 1909)",
        "sword-text-web sword-text-sparv",
    ),
    (
        "bible-kjv-web",
        "the King James Version to the World English Bible",
        "sword-text-kjv sword-text-web",
    ),
):
    DATASETS.add(
        _name,
        DatasetSpec(
            name=_name,
            classes=(),
            channels=1,
            height=1,
            width=1,
            read=_labelled_text,
            how_to_get=f"apt-get install {_packages} ({_what}, verse by verse; public domain)",
            bundled=_sword_pair(_name),
            kind="parallel-text",
        ),
    )

for _name, _what in (
    ("spoken-digits", "1-7 spoken digits, like TIDIGITS"),
    ("spoken-commands", "30 spoken commands, like Speech Commands"),
):
    DATASETS.add(
        _name,
        DatasetSpec(
            name=_name,
            classes=speech_vocabulary(_name),
            channels=1,
            height=1,
            width=1,
            read=_generated,
            how_to_get=(
                f"synthesized on first use ({_what}): apt-get install espeak-ng flite festival "
                "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
            ),
            kind="speech",
        ),
    )
