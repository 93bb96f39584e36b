"""Samplers of the RBM prior against exact enumeration: log Z (AIS, population annealing), marginals,
the log Z surrogate gradient, PCD maximum-likelihood training, resampling and the Hydra configs.

Tolerances are Monte Carlo errors: z-scores of independent-chain averages (bounded at 4.5-5.5 for a few
hundred statistics at once, a false-alarm rate below ~1e-3), or across independent runs for population
annealing, whose resampled chains are correlated. Seeds are fixed, so the tests are deterministic.
"""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.rbm_helpers import random_gaussian_rbm
from vae_lab.priors import AIS, PCD, RBM, PopulationAnnealing, enumerate_states, log_z_surrogate
from vae_lab.priors.ais import multinomial_resample, systematic_resample

CONF = Path(__file__).resolve().parents[1] / "conf" / "sampler"


def random_rbm(n_left, n_right, scale=0.5, seed=0, dtype=torch.float32):
    return random_gaussian_rbm(n_left, n_right, scale, seed, dtype)


def moment_z_scores(samples, rbm):
    """Largest |z-score| of sample means of z_i and z_i z_j (i < j) against the exact moments."""
    mean, second = rbm.exact_moments()
    samples = samples.double()
    num = samples.shape[0]
    upper = torch.triu_indices(rbm.n_units, rbm.n_units, offset=1)
    exact = torch.cat([mean, second[upper[0], upper[1]]])  # [n + n(n-1)/2], each a Bernoulli mean
    empirical = torch.cat([samples.mean(0), (samples[:, upper[0]] * samples[:, upper[1]]).mean(0)])
    std_err = (exact * (1 - exact) / num).sqrt()
    return ((empirical - exact) / std_err).abs().max().item()


# --------------------------------------------------------------------------------------------------
# log Z
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_ais_log_z_matches_exact(scale):
    rbm = random_rbm(10, 10, scale)
    exact = rbm.exact_log_z()
    result = AIS(rbm, num_chains=512, num_temperatures=300, seed=1).estimate_log_z()
    assert result.log_z.dtype == torch.float64 and result.num_resamples == 0
    assert abs(result.log_z - exact) < 0.05
    assert 0 < result.log_z_std_err < 0.05
    assert abs(result.log_z - exact) < 4 * result.log_z_std_err + 0.005


@pytest.mark.parametrize("scale", [0.5, 1.0])
@pytest.mark.parametrize("base,threshold,resampling", [("uniform", 0.5, "systematic"), ("biases", 0.5, "systematic"),
                                                       ("uniform", 0.99, "systematic"),
                                                       ("uniform", 0.99, "multinomial")])
def test_population_annealing_log_z_matches_exact(scale, base, threshold, resampling):
    """Threshold 0.99 resamples at nearly every step, exercising the weight bookkeeping across resamplings."""
    rbm = random_rbm(10, 10, scale)
    sampler = PopulationAnnealing(rbm, num_chains=1000, num_temperatures=100, base=base, seed=2,
                                  resample_threshold=threshold, resampling=resampling)
    result = sampler.estimate_log_z()
    assert abs(result.log_z - rbm.exact_log_z()) < 0.05
    assert result.num_resamples >= (4 if threshold > 0.9 else 1)  # the final one at least
    assert torch.allclose(result.log_weights.exp(), torch.full((1000,), 1e-3, dtype=torch.float64))


@pytest.mark.parametrize("threshold", [0.5, 0.99])
def test_population_annealing_with_few_temperatures_is_unbiased(threshold):
    """Few temperatures on a strongly coupled RBM: weights degenerate, so resampling must be right.

    The mean error over 10 runs must be within 4 standard errors of 0 (the log-Z bias of PA, ~ -var/2,
    is ~1e-3 here, far below that).
    """
    rbm = random_rbm(10, 10, 2.0)
    errors = torch.stack([PopulationAnnealing(rbm, num_chains=4000, num_temperatures=6, seed=seed,
                                              resample_threshold=threshold).estimate_log_z().log_z
                          for seed in range(10)]) - rbm.exact_log_z()
    assert errors.mean().abs() < 4 * errors.std() / 10**0.5


def test_ais_std_err_matches_spread_across_seeds():
    rbm = random_rbm(8, 8, 1.0)
    runs = [AIS(rbm, num_chains=64, num_temperatures=20, seed=seed).estimate_log_z() for seed in range(40)]
    log_zs = torch.stack([r.log_z for r in runs])
    reported = torch.stack([r.log_z_std_err for r in runs]).mean()
    # the std of a 40-run sample std is ~11%; the delta method is itself approximate at this weight spread
    assert 0.6 < (log_zs.std() / reported).item() < 1.6


def test_persistent_population_annealing_tracks_parameter_updates():
    rbm = random_rbm(10, 10, 0.5)
    sampler = PopulationAnnealing(rbm, num_chains=1000, num_temperatures=100, persistent=True, seed=3)
    sampler.estimate_log_z()
    generator = torch.Generator().manual_seed(4)
    for _ in range(5):  # a few small "training steps"
        with torch.no_grad():
            for param in rbm.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
        result = sampler.estimate_log_z()
        assert abs(result.log_z - rbm.exact_log_z()) < 0.05
    assert moment_z_scores(result.samples, rbm) < 6.0  # one correlated population: loose, catches gross errors
    sampler.reset()
    assert sampler._last is None


# --------------------------------------------------------------------------------------------------
# Marginals
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_pcd_marginals_match_exact(scale):
    rbm = random_rbm(10, 10, scale)
    sampler = PCD(rbm, num_chains=5000, num_sweeps=40, seed=5)
    sampler.sample()  # burn-in
    samples = sampler.sample()  # chains are independent: 5000 independent draws
    assert samples.shape == (5000, 20) and samples.dtype == torch.float32
    assert moment_z_scores(samples, rbm) < 4.5


@pytest.mark.parametrize("threshold", [0.5, 0.99])
def test_population_annealing_marginals_match_exact_across_runs(threshold):
    """Resampled populations are correlated, so the Monte Carlo error is taken across 30 independent runs."""
    rbm = random_rbm(10, 10, 0.5)
    mean, second = rbm.exact_moments()
    upper = torch.triu_indices(20, 20, offset=1)
    exact = torch.cat([mean, second[upper[0], upper[1]]])
    per_run = []
    for seed in range(30):
        sampler = PopulationAnnealing(rbm, num_chains=500, num_temperatures=50, resample_threshold=threshold,
                                      seed=seed)
        samples = sampler.sample().double()
        per_run.append(torch.cat([samples.mean(0), (samples[:, upper[0]] * samples[:, upper[1]]).mean(0)]))
    per_run = torch.stack(per_run)  # [runs, statistics]
    t_stats = (per_run.mean(0) - exact) / (per_run.std(0) / 30**0.5)
    assert t_stats.abs().max() < 5.5  # Student t, 29 dof, 210 statistics


# --------------------------------------------------------------------------------------------------
# The training signal
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rao_blackwell", [True, False])
def test_surrogate_gradient_matches_exact_log_z_gradient(rao_blackwell):
    rbm = random_rbm(6, 8, 1.0, dtype=torch.float64)
    exact = torch.autograd.grad(rbm.exact_log_z(), list(rbm.parameters()))
    sampler = PCD(rbm, num_chains=20000, num_sweeps=30, seed=6, rao_blackwell=rao_blackwell)
    sampler.sample()
    samples = sampler.sample()
    estimate = torch.autograd.grad(log_z_surrogate(rbm, samples, rao_blackwell=rao_blackwell),
                                   list(rbm.parameters()))
    # per-sample gradient of -E (or -F) w.r.t. (a, b, W): (z_left, m_right, z_left m_right^T)
    z_left, z_right = rbm.split(samples)
    m_right = torch.sigmoid(rbm.logits_right(z_left)).detach() if rao_blackwell else z_right
    per_sample = [z_left, m_right, (z_left[:, :, None] * m_right[:, None, :]).flatten(1)]
    for grad_exact, grad_estimate, contributions in zip(exact, estimate, per_sample):
        assert torch.allclose(grad_estimate.flatten(), contributions.mean(0))
        std_err = contributions.std(0) / len(samples) ** 0.5
        z_scores = (grad_estimate.flatten() - grad_exact.flatten()) / std_err.clamp_min(1e-12)
        assert z_scores.abs().max() < 4.5


def test_surrogate_value_and_weights():
    rbm = random_rbm(3, 4, 1.0, dtype=torch.float64)
    samples = enumerate_states(7)
    log_weights = -rbm.energy(samples).detach()  # weighting all states by p makes the estimate exact
    surrogate = log_z_surrogate(rbm, samples, log_z_value=torch.tensor(1.25), log_weights=log_weights)
    assert surrogate.item() == pytest.approx(1.25)
    exact = torch.autograd.grad(rbm.exact_log_z(), list(rbm.parameters()))
    for grad, grad_exact in zip(torch.autograd.grad(surrogate, list(rbm.parameters())), exact):
        assert torch.allclose(grad, grad_exact)
    assert log_z_surrogate(rbm, samples).item() == 0.0


def test_sampler_log_z_term_carries_the_estimate():
    rbm = random_rbm(5, 5, 0.5)
    pcd_term = PCD(rbm, num_chains=100, num_sweeps=2).log_z_term()
    assert pcd_term.item() == 0.0 and pcd_term.requires_grad
    sampler = PopulationAnnealing(rbm, num_chains=200, num_temperatures=20)
    term = sampler.log_z_term()
    assert term.item() == pytest.approx(sampler.log_z.item(), abs=1e-5) and term.requires_grad


def kl_divergence(teacher, student):
    """Exact KL(teacher || student) by enumeration of all joint states."""
    states = enumerate_states(teacher.n_units, dtype=teacher.weight.dtype)
    log_p = -teacher.energy(states).double() - teacher.exact_log_z()
    log_q = -student.energy(states).double() - student.exact_log_z()
    return (log_p.exp() * (log_p - log_q)).sum().item()


def test_pcd_maximum_likelihood_lowers_exact_kl():
    teacher = random_rbm(5, 6, 1.0, seed=7)
    states = enumerate_states(11, dtype=torch.float32)
    with torch.no_grad():
        probs = torch.softmax(-teacher.energy(states), dim=0)
    generator = torch.Generator().manual_seed(8)
    data = states[torch.multinomial(probs, 20000, replacement=True, generator=generator)]  # [20000, 11]
    student = RBM(5, 6)
    sampler = PCD(student, num_chains=500, num_sweeps=5, seed=9)
    optimizer = torch.optim.Adam(student.parameters(), lr=0.05)
    kl_start = kl_divergence(teacher, student)
    for step in range(250):
        batch = data[torch.randint(0, len(data), (500,), generator=generator)]
        # negative log-likelihood: E(z_data) + log Z, with log Z's gradient from the PCD samples
        loss = student.energy(batch).mean() + sampler.log_z_term()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    kl_end = kl_divergence(teacher, student)
    assert kl_start > 0.5
    assert kl_end < 0.03  # ~0.01 reached: sampling noise of 20000 data points and of the SGD steps


# --------------------------------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------------------------------
def test_systematic_resampling_counts_are_floor_or_ceil():
    generator = torch.Generator().manual_seed(10)
    weights = torch.rand(50, generator=generator, dtype=torch.float64) ** 3
    log_weights = (weights / weights.sum()).log()
    counts = torch.bincount(systematic_resample(log_weights, generator), minlength=50)
    expected = 50 * log_weights.exp()
    assert counts.sum() == 50
    assert torch.all(counts >= expected.floor()) and torch.all(counts <= expected.ceil())
    draws = torch.cat([multinomial_resample(log_weights, generator) for _ in range(400)])
    frequencies = torch.bincount(draws, minlength=50) / len(draws)
    z_scores = (frequencies - log_weights.exp()) / (log_weights.exp() * (1 - log_weights.exp()) / len(draws)).sqrt()
    assert z_scores.abs().max() < 4.5


def test_samplers_are_seeded_and_pcd_persists_and_resets():
    rbm = random_rbm(6, 6, 1.0)
    assert torch.equal(PCD(rbm, 50, 3, seed=11).sample(), PCD(rbm, 50, 3, seed=11).sample())
    assert torch.equal(AIS(rbm, 50, 10, seed=11).estimate_log_z().log_z, AIS(rbm, 50, 10, seed=11)().log_z)
    pcd = PCD(rbm, num_chains=50, num_sweeps=0, seed=12)
    first = pcd.sample()
    assert torch.equal(rbm.split(pcd.sample())[0], rbm.split(first)[0])  # zero sweeps: the chains stay put
    state = pcd.state_dict()
    after = pcd.sample(num_sweeps=2)
    pcd.load_state_dict(state)
    assert torch.equal(pcd.sample(num_sweeps=2), after)
    pcd.reset()
    assert pcd.z_left is None and pcd.sample().shape == (50, 12)


def test_ais_sample_returns_resampled_chains():
    rbm = random_rbm(4, 4, 1.0)
    sampler = AIS(rbm, num_chains=300, num_temperatures=50)
    samples = sampler.sample()
    assert samples.shape == (300, 8) and sampler.log_z is not None


@pytest.mark.parametrize("name,cls", [("pcd", PCD), ("population_annealing", PopulationAnnealing)])
def test_sampler_configs_are_partials_completed_with_the_rbm(name, cls):
    rbm = random_rbm(4, 4)
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    sampler = instantiate(cfg)(rbm=rbm)
    assert isinstance(sampler, cls) and sampler.rbm is rbm
    assert sampler.num_chains == cfg.num_chains


def test_the_evaluation_estimator_of_log_z_is_ais_with_the_published_settings():
    cfg = OmegaConf.load(CONF.parent / "train.yaml").eval.log_z
    ais = instantiate(cfg)(rbm=random_rbm(4, 4))
    assert isinstance(ais, AIS) and (ais.num_chains, ais.num_temperatures) == (1024, 1000)


# --------------------------------------------------------------------------------------------------
# Slow accuracy sweeps (make test-full)
# --------------------------------------------------------------------------------------------------
EFFORT = [(100, 10), (300, 100), (1000, 1000)]  # (chains, temperatures), growing


@pytest.mark.slow
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("method", ["ais", "pa", "pa_resample_always"])
def test_log_z_error_shrinks_with_effort(method, scale):
    """RMS error over 10 seeds decreases monotonically over 3 settings and is < 0.05 nats at the largest."""
    rbm = random_rbm(10, 10, scale)
    exact = rbm.exact_log_z()
    rms = []
    for chains, temperatures in EFFORT:
        errors = []
        for seed in range(10):
            if method == "ais":
                sampler = AIS(rbm, num_chains=chains, num_temperatures=temperatures, seed=seed)
            else:
                threshold = 0.99 if method == "pa_resample_always" else 0.5
                sampler = PopulationAnnealing(rbm, num_chains=chains, num_temperatures=temperatures, seed=seed,
                                              resample_threshold=threshold)
            errors.append(sampler.estimate_log_z().log_z - exact)
        rms.append(torch.stack(errors).pow(2).mean().sqrt().item())
    assert rms[0] > rms[1] > rms[2], rms
    assert rms[2] < 0.05, rms


@pytest.mark.slow
def test_default_settings_on_a_20_by_20_rbm():
    rbm = random_rbm(20, 20, 0.5, seed=13)
    exact = rbm.exact_log_z()
    ais = AIS(rbm, seed=14).estimate_log_z()  # 1024 chains, 1000 temperatures
    assert abs(ais.log_z - exact) < 0.05 and abs(ais.log_z - exact) < 4 * ais.log_z_std_err + 0.005
    assert abs(PopulationAnnealing(rbm, seed=15).estimate_log_z().log_z - exact) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_pcd_and_population_annealing_marginals_strong_coupling(scale):
    rbm = random_rbm(8, 8, scale, seed=16)
    pcd = PCD(rbm, num_chains=20000, num_sweeps=200, seed=17)
    pcd.sample()
    assert moment_z_scores(pcd.sample(), rbm) < 4.5
    mean, second = rbm.exact_moments()
    upper = torch.triu_indices(16, 16, offset=1)
    exact = torch.cat([mean, second[upper[0], upper[1]]])
    per_run = []
    for seed in range(40):
        samples = PopulationAnnealing(rbm, num_chains=1000, num_temperatures=200, seed=seed).sample().double()
        per_run.append(torch.cat([samples.mean(0), (samples[:, upper[0]] * samples[:, upper[1]]).mean(0)]))
    per_run = torch.stack(per_run)
    t_stats = (per_run.mean(0) - exact) / (per_run.std(0) / 40**0.5)
    assert t_stats.abs().max() < 5.5  # Student t, 39 dof, 136 statistics
