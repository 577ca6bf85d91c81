"""The diffusion transformer (ViT report, seed 000): inputs, model, training, loading.

Inference (:mod:`.estimator`, :mod:`.weights`) never imports training code
(:mod:`.train`, :mod:`.data`); importing this package does not import it either.
"""

from livespt.models.vit.estimator import (
    ViTEstimator,
    ViTPrediction,
)
from livespt.models.vit.inputs import WindowInputs, concat_inputs, prepare
from livespt.models.vit.model import DiffusionViT, ViTConfig
from livespt.models.vit.weights import (
    WEIGHTS_DIR,
    ModelLoadError,
    require_shipped_weights,
    shipped_weights,
)

__all__ = [
    "WEIGHTS_DIR",
    "DiffusionViT",
    "ModelLoadError",
    "ViTConfig",
    "ViTEstimator",
    "ViTPrediction",
    "WindowInputs",
    "concat_inputs",
    "prepare",
    "require_shipped_weights",
    "shipped_weights",
]
