"""The RBM prior of the discrete VAEs as a part: the Boltzmann machine, its training sampler (∇ log Z)
and its evaluation estimator of log Z (AIS), behind the ``Prior`` interface."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from vae_lab.errors import ConfigError
from vae_lab.priors.base import Prior
from vae_lab.priors.boltzmann import RBM
from vae_lab.priors.relaxed import (LogR0, gaussian_integral_lambda, gaussian_integral_log_marginal,
                                    mean_field_log_marginal)
from vae_lab.priors.samplers import AIS, RBMSampler


class RBMPrior(Prior):
    """p(z) = exp(-E(z)) / Z over binary z = (z_left, z_right), the RBM starting at zero.

    In training, ``log_z_train()`` draws from ``sampler`` (PCD or population annealing) and returns the
    scalar whose gradient is ∇ log Z; its value is the sampler's estimate (population annealing), else
    the last evaluation's AIS estimate, else 0 (PCD before the first validation). Before each
    evaluation ``prepare_evaluation`` estimates log Z with ``log_z_estimator`` (AIS) and keeps it, with
    its standard error, in buffers that checkpoints carry; ``log_prob`` of binary z uses it.
    ``regularizer()``: weight decay ``weight_decay`` · ½‖W‖² as the DVAE# reference.
    The samplers' state (PCD chains, generators) travels in the state dict, so a resumed run goes on.
    The family gives ``latent_dim`` units; the first ``n_left`` (null: half, rounded down) are the left layer.

    What it offers the regulariser cells (``offers``; vae_lab/regularisers.py): ``log_z_train``, the
    layers' ``split``, the energy's parts (``expected_energy`` of factorial means, ``biases``, ``couplings``,
    ``interaction``, ``model_sample_energy`` of the sampler's chains) and the continuous relaxations'
    marginals (``relaxed_log_marginal``, ``gaussian_integral_log_marginal``).
    """

    support = "boltzmann"
    offers = frozenset({"log_z_train", "split", "expected_energy", "biases", "couplings", "interaction",
                        "model_sample_energy", "relaxed_log_marginal", "gaussian_integral_log_marginal"})

    def __init__(self, latent_dim: int, n_left: int | None = None, sampler: Callable[..., RBMSampler] | None = None,
                 log_z_estimator: Callable[..., AIS] | None = None, weight_decay: float = 1e-4):
        super().__init__()
        n_left = latent_dim // 2 if n_left is None else n_left
        if not 0 < n_left < latent_dim:
            raise ConfigError(f"prior.n_left={n_left}: the RBM's left layer needs 1 to {latent_dim - 1} "
                              f"of the model's {latent_dim} latents (null: half)")
        n_right = latent_dim - n_left
        if sampler is None:
            raise ConfigError("prior=rbm needs a training sampler for its log Z gradient: "
                              "pass sampler=pcd or sampler=population_annealing")
        self.rbm = RBM(n_left, n_right, weight_init_std=0.0)
        self.sampler = sampler(rbm=self.rbm)
        self.log_z_estimator = (log_z_estimator or AIS)(rbm=self.rbm)
        self.weight_decay = weight_decay
        self.register_buffer("log_z", torch.zeros((), dtype=torch.float64))
        self.register_buffer("log_z_std_err", torch.full((), float("nan"), dtype=torch.float64))
        self.register_buffer("log_z_estimated", torch.tensor(False))

    def log_z_train(self) -> Tensor:
        """Scalar surrogate: gradient ∇ log Z from the sampler's draws (one draw per training step)."""
        fallback = self.log_z if bool(self.log_z_estimated) else None
        return self.sampler.log_z_term(fallback)

    # -- what the regulariser cells call (``offers``)
    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``[..., n]`` -> the left ``[..., n_left]`` and right ``[..., n_right]`` layers."""
        return self.rbm.split(z)

    def expected_energy(self, left: Tensor, right: Tensor, coupled_left: Tensor | None = None) -> Tensor:
        """E_q[E(z)] = -a·q_left - b·q_right - (ν_left W)·q_right ``[rows]`` for factorial means ``left``, ``right``;
        ``coupled_left``: the left means the coupling term sees (ν_left; default the left means)."""
        coupled = left if coupled_left is None else coupled_left
        return -(left @ self.rbm.bias_left) - right @ self.rbm.bias_right - ((coupled @ self.rbm.weight) * right).sum(-1)

    def biases(self) -> Tensor:
        """[a, b] ``[n]``."""
        return torch.cat([self.rbm.bias_left, self.rbm.bias_right])

    def couplings(self, z: Tensor) -> Tensor:
        """What each unit receives from the other layer, [W z_right, Wᵀ z_left] ``[rows, n]``."""
        left, right = self.rbm.split(z)
        return torch.cat([right @ self.rbm.weight.t(), left @ self.rbm.weight], dim=-1)

    def interaction(self, z: Tensor) -> Tensor:
        """z_leftᵀ W z_right ``[rows]``."""
        left, right = self.rbm.split(z)
        return ((left @ self.rbm.weight) * right).sum(-1)

    def model_sample_energy(self) -> Tensor:
        """E(z) ``[chains]`` of the training sampler's next draws (detached): the negative phase."""
        return self.rbm.energy(self.sampler.sample().detach())

    def relaxed_log_marginal(self, zeta: Tensor, log_r0: LogR0) -> Tensor:
        """The mean-field log Σ_z e^{-E(z)} Π_i r(ζ_i|z_i) ``[...]`` (DVAE#'s overlapping relaxations)."""
        return mean_field_log_marginal(self.rbm, zeta, log_r0)

    def gaussian_integral_log_marginal(self, zeta: Tensor, minimum_lambda: float) -> Tensor:
        """DVAE#'s Gaussian-integral log Σ_z e^{-E(z)} N(ζ; z, A⁻¹) ``[...]``, λ = max(minimum_lambda, 5 + max(0, -λ_min(W)))."""
        lam = gaussian_integral_lambda(self.rbm, minimum_lambda)
        return gaussian_integral_log_marginal(self.rbm, zeta, lam)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) = -E(z) - log Z with the last estimated log Z, for binary z ``[..., n]`` -> ``[...]``."""
        return -self.rbm.energy(z) - self.log_z.to(z.dtype)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``[num_samples, n]`` binary draws: the training sampler's current population (its chains)."""
        draws = self.sampler.sample()
        repeats = -(-num_samples // draws.shape[0])
        return draws.repeat(repeats, 1)[:num_samples]

    @torch.no_grad()
    def prepare_evaluation(self, model, datamodule) -> None:
        result = self.log_z_estimator.estimate_log_z()
        self.log_z.copy_(result.log_z)
        self.log_z_std_err.fill_(float("nan") if result.log_z_std_err is None else float(result.log_z_std_err))
        self.log_z_estimated.fill_(True)

    def evaluation_metrics(self) -> dict[str, float]:
        return {"log_z": float(self.log_z), "log_z_std_err": float(self.log_z_std_err)}

    def regularizer(self) -> Tensor:
        return self.weight_decay * 0.5 * self.rbm.weight.pow(2).sum()

    def get_extra_state(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "log_z_estimator": self.log_z_estimator.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if "log_z_estimator" in state:
            self.log_z_estimator.load_state_dict(state["log_z_estimator"])
