"""The discrete VAEs' maths against ground truth on RBMs small enough to enumerate."""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from tests.rbm_helpers import random_gaussian_rbm
from vae_lab.models.image_vae import ImageVAE
from vae_lab.objectives import elbo, iw_bound
from vae_lab.posteriors.bernoulli import BernoulliParams, BernoulliPosterior
from vae_lab.posteriors.smoothing import Exponential, GaussianMixtureRelaxation, OverlappingRelaxation, PowerFunction
from vae_lab.priors.boltzmann import enumerate_states
from vae_lab.priors.rbm_prior import RBMPrior
from vae_lab.priors.samplers import AIS, PCD
from vae_lab.regularisers import Encoding, dvaepp_kl

PIXELS = 16


def tiny_model(bound: str = "elbo", groups: int = 1, group_size: int = 12, relaxation=None,
               chains: int = 64) -> ImageVAE:
    """Bernoulli latents (overlapping exponential smoothing unless ``relaxation``) under an RBM prior; the
    regulariser is the table's for ``bound`` (elbo: DVAE++'s KL; iw: the DVAE# relaxed prior)."""
    torch.manual_seed(0)
    prior = partial(RBMPrior, sampler=partial(PCD, num_chains=chains, num_sweeps=5),
                    log_z_estimator=partial(AIS, num_chains=512, num_temperatures=300))
    posterior = partial(BernoulliPosterior, relaxation=relaxation or OverlappingRelaxation(Exponential(10.0)))
    model = ImageVAE(num_pixels=PIXELS, image_shape=(4, 4), pixel_mean=torch.full((PIXELS,), 0.3), prior=prior,
                     posterior=posterior, bound=bound,
                     struct={"num_groups": groups, "group_size": group_size, "hidden_layers": 1, "hidden_units": 8})
    model.prior.rbm.load_state_dict(random_gaussian_rbm(group_size * groups // 2, group_size * groups // 2,
                                                        scale=0.3, dtype=torch.float32).state_dict())
    return model


def dvaepp(model: ImageVAE, logits: torch.Tensor, zetas: list[torch.Tensor], log_z: torch.Tensor) -> torch.Tensor:
    """The DVAE++ KL of the table (vae_lab/regularisers.py) for logits ``[n, units]`` and ζ by group, at ``log_z``."""
    params = [BernoulliParams(part) for part in logits.split(model.group_size, dim=-1)]
    encoding = Encoding(model.posterior, params, zetas, True, 1, logits.shape[0])
    prior = model.prior
    prior.log_z_train = lambda: log_z  # the RBM prior's own methods, at this log Z
    return dvaepp_kl(encoding, prior).analytic_kl


def batch(size: int = 5) -> dict:
    return {"pixels": (torch.rand(size, PIXELS, generator=torch.Generator().manual_seed(1)) < 0.4).float()}


def test_nll_with_ais_log_z_matches_the_exact_log_z_within_its_error():
    model = tiny_model().eval()
    model.prepare_evaluation(None)
    exact = float(model.prior.rbm.exact_log_z())
    estimate, std_err = float(model.prior.log_z), float(model.prior.log_z_std_err)
    assert 0 < std_err < 0.05 and abs(estimate - exact) < 4 * std_err + 1e-4
    assert model.epoch_metrics(None, "test") == {"log_z": estimate, "log_z_std_err": std_err}
    torch.manual_seed(3)
    nll_ais = -model.log_weights(batch(), 20).total.double()
    model.prior.log_z.fill_(exact)
    torch.manual_seed(3)
    nll_exact = -model.log_weights(batch(), 20).total.double()
    # the same draws: the two NLL estimates differ by the log Z error alone
    torch.testing.assert_close(nll_ais - nll_exact, torch.full_like(nll_ais, estimate - exact), atol=1e-4, rtol=0)


def test_evaluation_log_weights_are_those_of_the_discrete_model():
    """Binary z ~ q(z|x); log w = log p(x|z) - E(z) - log Z - log q(z|x), checked term by term."""
    model = tiny_model().eval()
    model.prior.log_z.fill_(2.0)
    torch.manual_seed(0)
    weights = model.log_weights(batch(3), 4)
    torch.manual_seed(0)
    outputs, draws = model._encode_groups(batch(3)["pixels"], relaxed=False, repeats=4)
    z = draws[0]
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(weights.prior.flatten(), -model.prior.rbm.energy(z) - 2.0)
    q = torch.distributions.Bernoulli(logits=outputs[0].logits)
    torch.testing.assert_close(weights.posterior.flatten(), q.log_prob(z).sum(-1))


@pytest.mark.parametrize("smoothing", [Exponential(8.0), PowerFunction(20.0)])
def test_dvaepp_kl_of_one_group_is_the_exact_kl_to_the_rbm(smoothing):
    """One group: q factorial, so E_q[E(z)] + log Z - H(q) is KL(q || p) exactly (enumerate 2^12 z)."""
    model = tiny_model(relaxation=OverlappingRelaxation(smoothing))
    rbm = model.prior.rbm
    logits = torch.randn(3, 12, generator=torch.Generator().manual_seed(2))
    log_z = rbm.exact_log_z().float()
    kl = dvaepp(model, logits, [torch.rand(3, 12)], log_z)
    z = enumerate_states(12, dtype=torch.float32)  # [4096, 12]
    log_q = torch.distributions.Bernoulli(logits=logits[:, None, :]).log_prob(z).sum(-1)  # [3, 4096]
    log_p = -rbm.energy(z) - log_z  # [4096]
    exact = (log_q.exp() * (log_q - log_p)).sum(-1)
    torch.testing.assert_close(kl, exact, atol=1e-3, rtol=1e-4)


def test_dvaepp_kl_of_a_hierarchy_perturbs_the_left_means_by_the_log_ratio():
    """Two groups: the coupling term uses sigmoid(l_left + log r(ζ|1)/r(ζ|0)) (DVAE++ eq. 9); with
    ζ at 1/2, where the exponential smoothing's log ratio is 0, it equals the factorial formula."""
    model = tiny_model(groups=2, group_size=6)
    logits = torch.randn(2, 12, generator=torch.Generator().manual_seed(0))
    half = [torch.full((2, 6), 0.5)] * 2
    near_one = [torch.full((2, 6), 0.99)] * 2
    flat = tiny_model(groups=1, group_size=12)
    flat.prior.rbm.load_state_dict(model.prior.rbm.state_dict())
    torch.testing.assert_close(dvaepp(model, logits, half, torch.tensor(0.0)),
                               dvaepp(flat, logits, [torch.cat(half, -1)], torch.tensor(0.0)))
    assert not torch.allclose(dvaepp(model, logits, near_one, torch.tensor(0.0)),
                              dvaepp(flat, logits, [torch.cat(near_one, -1)], torch.tensor(0.0)))


@pytest.mark.parametrize("bound,relaxation", [("elbo", None), ("iw", None), ("iw", GaussianMixtureRelaxation())])
def test_training_log_weights_iw_bound_at_least_elbo_and_equal_at_k1(bound, relaxation):
    """DVAE++'s KL, the mean-field relaxed prior, the Gaussian-integral prior."""
    model = tiny_model(bound, groups=2, group_size=6, relaxation=relaxation).train()
    weights = model.log_weights(batch(), 6)
    assert torch.all(iw_bound(weights) >= elbo(weights) - 1e-4)
    one = model.log_weights(batch(), 1)
    torch.testing.assert_close(iw_bound(one), elbo(one))
    assert torch.isfinite(weights.total).all()


def test_relaxed_training_gradients_reach_the_encoder_the_decoder_and_the_rbm():
    for bound in ("elbo", "iw"):
        model = tiny_model(bound, groups=2, group_size=6).train()
        weights = model.log_weights(batch(), 2)
        (-(iw_bound(weights).mean()) + model.regularizer()).backward()
        for name, param in [("encoder", model.encoders[1].output.weight), ("decoder", model.decoder.output.weight),
                            ("rbm", model.prior.rbm.weight)]:
            assert param.grad is not None and param.grad.abs().sum() > 0, (bound, name)


def test_pcd_chains_and_generator_travel_in_the_state_dict():
    model = tiny_model()
    model.prior.sampler.sample()
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in model.state_dict().items()}
    import copy

    saved = copy.deepcopy(model.prior.get_extra_state())
    continued = model.prior.sampler.sample().clone()
    restored = tiny_model()
    restored.load_state_dict(state)
    restored.prior.set_extra_state(saved)
    assert torch.equal(restored.prior.sampler.sample(), continued)
    assert math.isfinite(float(restored.prior.regularizer()))
