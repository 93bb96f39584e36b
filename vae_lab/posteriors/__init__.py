"""Posterior distributions q(z|x) as parts shared by model families: Gaussian (gaussian.py),
factorial Bernoulli with smoothing relaxations (bernoulli.py, smoothing.py)."""
from vae_lab.posteriors.gaussian import (GaussianPosterior, diagonal_mixture_log_prob,
                                         standard_normal_log_prob)

__all__ = ["GaussianPosterior", "diagonal_mixture_log_prob", "standard_normal_log_prob"]
