"""Posterior distributions q(z|x) as parts shared by model families: Gaussian (gaussian.py), factorial
Bernoulli with smoothing relaxations (bernoulli.py, smoothing.py). Their densities' maths that priors share
lives in vae_lab/densities.py."""
from vae_lab.posteriors.gaussian import GaussianParams, GaussianPosterior

__all__ = ["GaussianParams", "GaussianPosterior"]
