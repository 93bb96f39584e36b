"""The device rule (vae_lab/devices.py): every generator vae_lab makes follows the model's device, and a
generator on another device than the draws is refused by the helper with one line, not by a CUDA error
deep inside a kernel. On the CPU, the meta device and a CUDA device object stand in for "elsewhere"."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vae_lab.devices import DeviceMismatchError, checked_generator, device_of, draw_device, generator_on
from vae_lab.posteriors.bernoulli import BernoulliParams
from vae_lab.posteriors.gaussian import GaussianParams
from vae_lab.priors.boltzmann import RBM
from vae_lab.priors.mixture import AggregatePosteriorPrior, MixturePrior, StandardNormalPrior
from vae_lab.priors.samplers import PCD

PACKAGE = Path(__file__).resolve().parents[1] / "vae_lab"


def test_every_generator_in_the_package_comes_from_the_helper():
    """A path that makes its own ``torch.Generator()`` bypasses the rule (it was so in callbacks.py, the
    sample mode, the MI, the mixture prior and the CVAE's Gaussian score). Host-side data samplers
    (vae_lab/data/) draw indices into host memory and keep a CPU generator on purpose."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "devices.py" or "data" in path.relative_to(PACKAGE).parts[:1]:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"torch\.Generator\(", line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "use vae_lab.devices.generator_on:\n" + "\n".join(offenders)


def test_generator_on_follows_a_module_a_tensor_or_a_device():
    model = torch.nn.Linear(2, 2)
    assert generator_on(model, 0).device == torch.device("cpu")
    assert device_of(torch.empty(1, device="meta")) == torch.device("meta")
    assert device_of(torch.nn.Module()) == torch.device("cpu")  # nothing to follow: the host
    a, b = generator_on("cpu", 3), generator_on(model, 3)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


@pytest.mark.parametrize("elsewhere", ["meta", "cuda", "cuda:1"])
def test_a_generator_on_another_device_is_refused_by_the_helper(elsewhere):
    with pytest.raises(DeviceMismatchError, match=f"generator is on cpu but the draws are on {elsewhere}"):
        checked_generator(generator_on("cpu", 0), torch.device(elsewhere), "a test")
    assert checked_generator(None, torch.device(elsewhere)) is None


@pytest.mark.parametrize("prior", [lambda: MixturePrior(latent_dim=3, components=4),
                                   lambda: AggregatePosteriorPrior(latent_dim=3, components=4)])
def test_priors_refuse_a_generator_that_is_not_on_their_device(prior):
    prior = prior().to("meta")  # the parameters live elsewhere than the CPU generator
    with pytest.raises(DeviceMismatchError, match="Prior.sample"):
        prior.sample(5, generator_on("cpu", 0))


def test_prior_draws_are_on_the_prior_device_and_seeded():
    prior = MixturePrior(latent_dim=3, components=4)
    a, b = prior.sample(6, generator_on(prior, 1)), prior.sample(6, generator_on(prior, 1))
    assert a.device == torch.device("cpu") and torch.equal(a, b)
    normal = StandardNormalPrior(latent_dim=3)  # no tensors: its draws go where the generator is
    assert draw_device(normal, generator_on("cpu", 0), "test") == torch.device("cpu")
    assert normal.sample(2, generator_on("cpu", 0)).shape == (2, 3)


@pytest.mark.parametrize("posterior", [
    lambda device: GaussianParams(torch.zeros(8, 2, device=device), torch.zeros(8, 2, device=device)),
    lambda device: BernoulliParams(torch.zeros(8, 2, device=device))])
def test_mutual_information_draws_where_the_posteriors_are(posterior):
    value = posterior("cpu").mutual_information(generator=generator_on("cpu", 0))
    assert abs(value) < 1e-6  # every x has the same posterior: I(x; z) = 0
    with pytest.raises(DeviceMismatchError, match="mutual information"):
        posterior("meta").mutual_information(generator=generator_on("cpu", 0))


def test_sampler_state_from_another_device_restarts_from_the_seed_instead_of_crashing():
    """A PCD checkpoint written on a GPU holds a CUDA generator state (16 bytes), which a CPU generator
    cannot take; the chains come back on the RBM's device."""
    rbm = RBM(4, 4)
    sampler = PCD(rbm, num_chains=8, num_sweeps=2, seed=5)
    sampler.sample()
    state = sampler.state_dict()
    assert state["generator_device"] == "cpu"
    restored = PCD(rbm, num_chains=8, num_sweeps=2, seed=5)
    restored.load_state_dict(state)
    assert torch.equal(restored.sample(), sampler.sample())  # same device: the same draws go on
    foreign = {**state, "generator_device": "cuda", "generator": torch.zeros(16, dtype=torch.uint8),
               "z_left": state["z_left"].double()}
    moved = PCD(rbm, num_chains=8, num_sweeps=2, seed=5)
    moved.load_state_dict(foreign)
    draws = moved.sample()
    assert draws.dtype == rbm.weight.dtype and draws.shape == (8, 8)
    expected = PCD(rbm, num_chains=8, num_sweeps=2, seed=5)  # the saved chains, the draws from the seed
    expected.load_state_dict({"generator": generator_on("cpu", 5).get_state(), "z_left": state["z_left"]})
    assert torch.equal(draws, expected.sample())
