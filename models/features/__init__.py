"""Hand-crafted trajectory features fused into the ViT's regression token.

- :func:`trajectory_features`: the 25 features of a batch of (possibly padded) windows, in
  torch, on CPU or CUDA.
- :func:`features_numpy`: the same for numpy arrays.
- :data:`FEATURE_NAMES`, :data:`FEATURES`, :data:`FEATURE_UNITS`, :data:`FEATURE_TRANSFORMS`:
  the order, units and suggested normalising transform of each feature.

See ``docs/features.md`` for the definitions and what happens on degenerate windows.
"""

from livespt.models.features.trajectory import (
    FEATURE_NAMES,
    FEATURE_TRANSFORMS,
    FEATURE_UNITS,
    FEATURES,
    N_FEATURES,
    FeatureSpec,
    features_numpy,
    trajectory_features,
)

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "FEATURE_TRANSFORMS",
    "FEATURE_UNITS",
    "N_FEATURES",
    "FeatureSpec",
    "features_numpy",
    "trajectory_features",
]
