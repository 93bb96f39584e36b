import math

import sacrebleu
import torch

from vae_lab.metrics.likelihood import (active_units, gaussian_mutual_information,
                                        importance_weighted_nll, perplexity)
from vae_lab.models.base import LatentVariableModel
from vae_lab.models.sentence_vae import SentenceVAE
from vae_lab.objectives import LogWeights
from vae_lab.densities import standard_normal_log_prob
from vae_lab.posteriors import GaussianPosterior


class LinearGaussian(LatentVariableModel):
    """z ~ N(0, 1), x | z ~ N(z, s^2): p(x) = N(0, 1 + s^2) exactly; q is the exact posterior
    scaled by ``posterior_scale`` (1: exact, importance weights constant)."""

    def __init__(self, noise_std: float = 0.5, posterior_scale: float = 1.0):
        super().__init__()
        self.noise_var, self.posterior_scale = noise_std ** 2, posterior_scale

    def log_weights(self, batch, num_samples=1, encoded=None):
        x = batch["x"]  # [batch]
        post_var = self.noise_var / (1 + self.noise_var)
        mean = (x / (1 + self.noise_var)).unsqueeze(-1)
        log_var = torch.full_like(mean, math.log(post_var * self.posterior_scale ** 2))
        z = GaussianPosterior.rsample(mean, log_var, num_samples)  # [k, batch, 1]
        rec = -0.5 * ((x - z[..., 0]) ** 2 / self.noise_var + math.log(2 * math.pi * self.noise_var))
        return LogWeights(log_likelihood=rec, prior=standard_normal_log_prob(z),
                          posterior=GaussianPosterior.log_prob(z, mean, log_var))


def exact_nll(x: torch.Tensor, noise_var: float) -> torch.Tensor:
    var = 1 + noise_var
    return 0.5 * (x.double() ** 2 / var + math.log(2 * math.pi * var))


def test_iw_nll_exact_with_the_true_posterior():
    torch.manual_seed(0)
    x = torch.randn(8) * 1.5
    nll = importance_weighted_nll(LinearGaussian(posterior_scale=1.0), {"x": x}, num_samples=7, chunk_size=3)
    torch.testing.assert_close(nll, exact_nll(x, 0.25), rtol=0, atol=1e-5)


def test_iw_nll_converges_from_a_wider_posterior():
    torch.manual_seed(0)
    x = torch.randn(16)
    model = LinearGaussian(posterior_scale=2.0)
    coarse = importance_weighted_nll(model, {"x": x}, num_samples=1, chunk_size=1)
    fine = importance_weighted_nll(model, {"x": x}, num_samples=4000, chunk_size=500)
    exact = exact_nll(x, 0.25)
    assert (fine - exact).abs().max() < 0.05
    assert (coarse - exact).mean() > (fine - exact).mean()  # an upper bound that tightens with K


def test_active_units():
    means = torch.zeros(100, 4)
    means[:, 0] = torch.linspace(-1, 1, 100)  # variance ~0.34
    means[:, 1] = torch.linspace(-0.1, 0.1, 100)  # variance ~0.0034
    assert active_units(means) == 1
    assert active_units(means, threshold=0.001) == 2


def test_mutual_information_bounds():
    g = torch.Generator().manual_seed(0)
    n = 256
    same = gaussian_mutual_information(torch.zeros(n, 3), torch.zeros(n, 3), generator=g)
    assert abs(same) < 1e-9  # q(z|x) the same for every x
    far = gaussian_mutual_information(torch.arange(n).float().unsqueeze(1) * 100, torch.zeros(n, 1), generator=g)
    assert math.isclose(far, math.log(n), rel_tol=1e-6)  # perfectly separated: I = log n


def test_perplexity():
    assert math.isclose(perplexity(total_nll=10 * math.log(50), total_units=10), 50.0)


def test_bleu_is_sacrebleu_and_one_on_identical():
    refs = ["the cat sat on the mat", "a dog barked at the mailman today"]
    hyps = ["the cat sat on a mat", "a dog barked at the mailman"]
    ours = SentenceVAE.text_metrics(hyps, refs)["bleu"]
    direct = sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score / 100
    assert math.isclose(ours, direct) and 0 < ours < 1
    assert math.isclose(SentenceVAE.text_metrics(refs, refs)["bleu"], 1.0)


def test_the_parts_import_bottom_up():
    """posteriors/, priors/, nets/ and objectives import neither metrics/ nor models/ nor Lightning or
    Hydra (the tree reads bottom-up: metrics/likelihood.py takes the Gaussian maths from posteriors/)."""
    import subprocess
    import sys

    parts = ("vae_lab.posteriors", "vae_lab.posteriors.bernoulli", "vae_lab.posteriors.smoothing",
             "vae_lab.priors", "vae_lab.priors.mixture", "vae_lab.priors.rbm_prior", "vae_lab.priors.relaxed",
             "vae_lab.nets.mlp", "vae_lab.nets.rnn", "vae_lab.objectives")
    code = (f"import sys\nfor name in {parts!r}: __import__(name)\n"
            "print(' '.join(m for m in sys.modules if m.startswith(('vae_lab.metrics', 'vae_lab.models', "
            "'pytorch_lightning', 'lightning', 'hydra'))))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert imported == []
