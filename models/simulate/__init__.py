"""Physical simulator of single-particle tracking and localization microscopy data.

Everything speaks physical units (um, s, um^2/s, photons) and is vectorised
torch code that runs on CPU or CUDA and is reproducible from a seed. See
``docs/simulator.md`` for the equations and what is not modelled.

* :func:`simulate_trajectories` - Brownian motion sampled inside each exposure
  (motion blur), per-particle or piecewise-constant D, optional confinement.
* :func:`simulate_movie` - full uint16 frames and a ground-truth table.
* :func:`simulate_patches` - per-particle patch sequences cropped around noisy
  localizations, to train image-based D estimators.
* :func:`simulate_smlm` - small SMLM frames with kernel-density targets.
* :class:`Camera`, :func:`expose`, :func:`snr_of`, :func:`photons_for_snr` -
  the noise model and the one SNR definition.
"""

from livespt.models.simulate.camera import (
    Camera,
    expose,
    photons_for_snr,
    smooth_background_map,
    snr_of,
)
from livespt.models.simulate.localization import localization_precision_um
from livespt.models.simulate.movie import (
    GROUND_TRUTH_COLUMNS,
    Movie,
    MovieConfig,
    render_expected,
    simulate_movie,
)
from livespt.models.simulate.patches import PatchSequences, simulate_patches
from livespt.models.simulate.photophysics import Photophysics, emission_states, emitted_photons
from livespt.models.simulate.psf_shapes import PsfShape
from livespt.models.simulate.smlm import SMLMBatch, simulate_smlm
from livespt.models.simulate.trajectories import (
    Trajectories,
    diffusion_schedule,
    effective_blur_coefficient,
    resolve_exposure,
    simulate_trajectories,
    substep_times_s,
)

__all__ = [
    "GROUND_TRUTH_COLUMNS",
    "Camera",
    "Movie",
    "MovieConfig",
    "PatchSequences",
    "Photophysics",
    "PsfShape",
    "SMLMBatch",
    "Trajectories",
    "diffusion_schedule",
    "effective_blur_coefficient",
    "emission_states",
    "emitted_photons",
    "expose",
    "localization_precision_um",
    "photons_for_snr",
    "render_expected",
    "resolve_exposure",
    "simulate_movie",
    "simulate_patches",
    "simulate_smlm",
    "simulate_trajectories",
    "smooth_background_map",
    "snr_of",
    "substep_times_s",
]
