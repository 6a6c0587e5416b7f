"""Models by name: ``create_model("resnet20", num_classes=10)``, ``list_models("resnet*")``,
``list_models(kind="text")``.

Importing this package imports every model module, which registers its models in ``MODELS``.
"""

from neuralab.models import (
    attention,
    boxes,
    centernet,
    cnn,
    detect,
    gpt,
    mlp,
    resnet,
    retinanet,
    rnn,
    unet,
    vit,
)
from neuralab.models.base import (
    MODELS,
    ImageClassifier,
    ImageModelConfig,
    LanguageModel,
    Normalize,
    TextModelConfig,
    create_model,
    list_models,
    model_config,
    model_config_class,
    model_defaults,
    model_kind,
    register_model,
)

__all__ = [
    "MODELS",
    "ImageClassifier",
    "ImageModelConfig",
    "LanguageModel",
    "Normalize",
    "TextModelConfig",
    "attention",
    "boxes",
    "centernet",
    "cnn",
    "create_model",
    "detect",
    "gpt",
    "list_models",
    "mlp",
    "model_config",
    "model_config_class",
    "model_defaults",
    "model_kind",
    "register_model",
    "resnet",
    "retinanet",
    "rnn",
    "unet",
    "vit",
]
