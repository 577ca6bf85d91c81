"""Exact references for localizing emitters in a frame (seed 004, appendices A.2 and A.3).

The image model, the likelihood with read noise, Fisher information and the Cramer-Rao
bound, a maximum-likelihood fitter, a Metropolis-Hastings sampler of the posterior, and
the box photometry the localizer reports photons with.

They are what the learned localizer (DeepSTORM + DDPM, :mod:`livespt.models.ddpm`) is
measured against: its positions against the CRLB, its uncertainty against the MCMC posterior.
Positions are in pixels of the frame (pixel ``(i, j)`` centred at ``x = j, y = i``),
photons and background in photo-electrons.
"""

from livespt.models.localize.crlb import crlb, fisher_information, pixel_information
from livespt.models.localize.image import expected_image, expected_image_and_jacobian, pack, unpack
from livespt.models.localize.likelihood import log_prob_exact, neg_log_likelihood
from livespt.models.localize.mcmc import Chain, sample_posterior
from livespt.models.localize.mle import Fit, fit_emitters
from livespt.models.localize.photometry import box_photons

__all__ = ["Chain", "Fit", "box_photons", "crlb", "expected_image", "expected_image_and_jacobian",
           "fisher_information", "fit_emitters", "log_prob_exact", "neg_log_likelihood",
           "pack", "pixel_information", "sample_posterior", "unpack"]
