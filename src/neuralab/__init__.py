"""neuralab: a lab bench for the core ideas of deep learning.

prepare data -> design the model -> train -> validate -> test, then attack,
probe, compare and report on what was trained.

The names below are imported on first use (PEP 562), so that ``import neuralab.cli`` and
``neuralab --help`` answer without loading PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_LAZY = {
    "create_model": "neuralab.models",
    "list_models": "neuralab.models",
    "load_model": "neuralab.train.evaluate",
    "sample": "neuralab.train.generate",
}
__all__ = ["create_model", "list_models", "load_model", "sample", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neuralab' has no attribute {name!r}")
