"""neuralab: a lab bench for the core ideas of deep learning.

prepare data -> design the model -> train -> validate -> test, then attack,
probe, compare and report on what was trained.
"""

from neuralab.models import create_model, list_models
from neuralab.train.evaluate import load_model
from neuralab.train.generate import sample

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_model", "sample", "__version__"]
