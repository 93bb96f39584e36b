"""The MMD penalty (vae_lab/penalties.py, conf/penalty/mmd.yaml) against independent ground truth:

- ``MMD.estimate`` against the unbiased MMD²_u of Gretton et al. (2012, eq. 3), written here with explicit
  double loops over the rows and the kernel by hand (inverse multiquadratics Σ_s C_s / (C_s + ‖x - y‖²), or the
  Gaussian Σ_s exp(-‖x - y‖² / C_s), C_s = 2 · dim · s), on tiny inputs, and with more than 25 rows (where
  ``torch.cdist`` switches to its matrix-product path), including repeated rows (zero distances);
- its gradient against autograd through the same double loops (finite at zero distances);
- unbiasedness: averaged over many independent small batches of the same distribution it is 0 within its
  standard error, and clearly > 0 for a shifted distribution;
- ``MMD(encoding, prior)``: the estimate between all k × batch draws and the prior's draws, expanded to
  ``[batch]``, gradients to the draws only;
- its way into the loss: ``pack_log_weights`` puts it in ``LogWeights.terms["mmd"]`` and
  ``training_objective`` adds ``objective.weights.mmd`` × its batch mean (a term without a weight is refused);
  penalty=mmd composes to ``penalties.mmd`` (imq, the seven scales) with ``objective.weights.mmd = 100``.
"""
from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from vae_lab.errors import ConfigError
from vae_lab.models.image_vae import ImageVAE
from vae_lab.objectives import training_objective
from vae_lab.penalties import MMD
from vae_lab.posteriors.gaussian import GaussianPosterior
from vae_lab.priors.mixture import StandardNormalPrior
from vae_lab.regularisers import Encoding

SCALES = (0.1, 1.0, 5.0)


def kernel_by_hand(a: torch.Tensor, b: torch.Tensor, kind: str, scales) -> torch.Tensor:
    dim = a.shape[0]
    squared = sum((a[d] - b[d]) ** 2 for d in range(dim))
    total = 0.0
    for s in scales:
        c = 2.0 * dim * s
        total = total + (c / (c + squared) if kind == "imq" else torch.exp(-squared / c))
    return total


def mmd_u_by_loops(x: torch.Tensor, y: torch.Tensor, kind: str, scales=SCALES) -> torch.Tensor:
    """Gretton et al.'s MMD²_u: 1/(m(m-1)) Σ_{i≠j} k(x_i,x_j) + 1/(n(n-1)) Σ_{i≠j} k(y_i,y_j)
    - 2/(mn) Σ_{i,j} k(x_i,y_j)."""
    m, n = x.shape[0], y.shape[0]
    xx = sum(kernel_by_hand(x[i], x[j], kind, scales) for i in range(m) for j in range(m) if i != j)
    yy = sum(kernel_by_hand(y[i], y[j], kind, scales) for i in range(n) for j in range(n) if i != j)
    xy = sum(kernel_by_hand(x[i], y[j], kind, scales) for i in range(m) for j in range(n))
    return xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2.0 * xy / (m * n)


def samples(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


@pytest.mark.parametrize("kind", ["imq", "rbf"])
@pytest.mark.parametrize("n", [2, 5, 30])
def test_estimate_is_the_unbiased_u_statistic(kind, n):
    mmd = MMD(kernel=kind, scales=SCALES)
    x, y = samples(n, 3, 0), samples(n, 3, 1, shift=0.5)
    if n > 2:
        x[1] = x[0]  # a repeated row: a zero distance off the diagonal
    torch.testing.assert_close(mmd.estimate(x, y), mmd_u_by_loops(x, y, kind), rtol=1e-9, atol=1e-10)


def test_default_scales_are_the_configs():
    mmd = MMD()
    assert mmd.kernel == "imq" and mmd.scales == (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
    x, y = samples(4, 2, 2), samples(4, 2, 3)
    torch.testing.assert_close(mmd.estimate(x, y), mmd_u_by_loops(x, y, "imq", mmd.scales))


@pytest.mark.parametrize("n", [6, 30])
def test_gradient_matches_the_double_loops_and_is_finite_at_zero_distances(n):
    mmd = MMD(kernel="imq", scales=SCALES)
    y = samples(n, 3, 4)
    base = samples(n, 3, 5)
    base[2] = base[1]
    x1, x2 = base.clone().requires_grad_(), base.clone().requires_grad_()
    mmd.estimate(x1, y).backward()
    mmd_u_by_loops(x2, y, "imq").backward()
    assert torch.isfinite(x1.grad).all()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-7, atol=1e-10)


def test_zero_in_expectation_for_one_distribution_and_positive_for_a_shift():
    mmd = MMD(kernel="imq")
    repeats, n, dim = 400, 8, 2
    same = torch.stack([mmd.estimate(samples(n, dim, 2 * r), samples(n, dim, 2 * r + 1)) for r in range(repeats)])
    shifted = torch.stack([mmd.estimate(samples(n, dim, 2 * r), samples(n, dim, 2 * r + 1, shift=1.5))
                           for r in range(repeats)])
    se = float(same.std()) / math.sqrt(repeats)
    assert abs(float(same.mean())) < 4 * se, (float(same.mean()), se)
    assert float(same.min()) < 0  # unbiased, not a V-statistic: it goes below 0
    assert float(shifted.mean()) > 20 * max(se, float(shifted.std()) / math.sqrt(repeats))


def test_fewer_than_two_rows_give_zero():
    assert float(MMD().estimate(torch.randn(1, 3), torch.randn(1, 3))) == 0.0


@pytest.mark.parametrize("bad", [dict(kernel="laplace"), dict(scales=()), dict(scales=(1.0, 0.0))])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="penalties.mmd"):
        MMD(**bad)


class FixedPrior:
    """A prior whose draws are fixed rows (and a record of how many were asked for)."""

    def __init__(self, rows: torch.Tensor):
        self.rows, self.asked = rows, []

    def sample(self, num_samples: int, generator=None) -> torch.Tensor:
        self.asked.append(num_samples)
        return self.rows[:num_samples].clone().requires_grad_()  # no gradient may reach it


def test_the_penalty_compares_all_draws_with_as_many_prior_draws():
    k, batch, dim = 3, 4, 2
    latents = samples(k * batch, dim, 6).view(k, batch, dim).requires_grad_()
    prior = FixedPrior(samples(20, dim, 7))
    encoding = Encoding(GaussianPosterior(dim), [], [latents], True, k, batch, latents=latents)
    value = MMD(kernel="rbf", scales=SCALES)(encoding, prior)
    assert prior.asked == [k * batch] and value.shape == (batch,)
    reference = mmd_u_by_loops(latents.detach().reshape(-1, dim), prior.rows[:k * batch], "rbf")
    torch.testing.assert_close(value, reference.expand(batch))
    value.mean().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0


def tiny_model() -> ImageVAE:
    torch.manual_seed(0)
    return ImageVAE(num_pixels=6, image_shape=(2, 3), pixel_mean=torch.full((6,), 0.3), prior=StandardNormalPrior,
                    posterior=GaussianPosterior,
                    struct={"num_groups": 1, "group_size": 3, "hidden_layers": 1, "hidden_units": 5})


class RecordingMMD(MMD):
    """The MMD, keeping what it was asked to compare."""

    def estimate(self, z, y):
        self.seen = (z.detach().clone(), y.detach().clone())
        return super().estimate(z, y)


def test_it_enters_the_log_weights_by_name_and_the_loss_by_its_weight():
    model = tiny_model().train()
    penalty = RecordingMMD()
    model.set_penalties({"mmd": penalty})
    pixels = (torch.rand(5, 6, generator=torch.Generator().manual_seed(8)) < 0.4).float()
    torch.manual_seed(9)
    log_weights = model.log_weights({"pixels": pixels}, num_samples=2)
    assert set(log_weights.terms) == {"mmd"} and log_weights.terms["mmd"].shape == (5,)
    z, y = penalty.seen
    assert z.shape == y.shape == (2 * 5, 3)  # all k x batch draws against as many prior draws
    torch.testing.assert_close(log_weights.terms["mmd"].detach(),
                               mmd_u_by_loops(z.double(), y.double(), "imq", penalty.scales).float().expand(5))
    weighted = training_objective(log_weights, term_weights={"mmd": 100.0})
    off = training_objective(log_weights, term_weights={"mmd": 0.0})
    unweighted = training_objective(log_weights, term_weights=None)  # evaluation: terms logged, not added
    torch.testing.assert_close(weighted.loss - unweighted.loss, 100.0 * log_weights.terms["mmd"].mean())
    torch.testing.assert_close(off.loss, unweighted.loss)
    assert set(weighted.terms) == set(unweighted.terms) == {"mmd"}


def test_a_term_without_a_weight_is_refused():
    model = tiny_model().train()
    model.set_penalties({"mmd": MMD()})
    log_weights = model.log_weights({"pixels": torch.ones(3, 6)}, num_samples=1)
    with pytest.raises(ConfigError, match=r"objective.weights.mmd"):
        training_objective(log_weights, term_weights={"codebook": 1.0})


def test_penalty_mmd_config(make_config):
    cfg = make_config(["penalty=mmd"])
    assert cfg.objective.weights.mmd == 100.0
    penalty = instantiate(cfg.penalties.mmd)
    assert isinstance(penalty, MMD) and penalty.kernel == "imq"
    assert penalty.scales == (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
    assert make_config([]).get("penalties") in (None, {})  # off by default
    rbf = instantiate(make_config(["penalty=mmd", "penalties.mmd.kernel=rbf"]).penalties.mmd)
    assert rbf.kernel == "rbf"
