"""Boltzmann-machine priors over binary latents and their samplers (no Lightning / Hydra dependency)."""

from vae_lab.priors.ais import AnnealingResult, anneal
from vae_lab.priors.boltzmann import RBM, GibbsSweeper, enumerate_states
from vae_lab.priors.samplers import AIS, PCD, PopulationAnnealing, RBMSampler, log_z_surrogate

__all__ = ["AIS", "AnnealingResult", "GibbsSweeper", "PCD", "PopulationAnnealing", "RBM", "RBMSampler",
           "anneal", "enumerate_states", "log_z_surrogate"]
