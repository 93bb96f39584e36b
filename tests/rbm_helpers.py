"""Shared test helpers for the RBM prior."""
import torch

from vae_lab.priors import RBM


def random_gaussian_rbm(n_left: int, n_right: int, scale: float = 0.5, seed: int = 0,
                        dtype: torch.dtype = torch.float64) -> RBM:
    """An RBM whose biases and weights are all drawn from N(0, scale^2) with a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    rbm = RBM(n_left, n_right, dtype=dtype)
    with torch.no_grad():
        for param in rbm.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=dtype) * scale)
    return rbm
