"""The remedies against posterior collapse keep the KL up where plain training collapses (issue 25).

The setting: the sentence VAE shrunk (embedding and GRU 32, 8 latents) on 400 PTB sentences, 80 steps at
learning rate 3e-3 with the KL weight at 1 from the first step (``annealing=constant``). Plain training
collapses there (test KL < 0.05 nats, no active unit); free bits, autoencoder pretraining then free bits,
and BN-VAE each keep every unit active. Cyclical annealing is not among them: it collapses in this setting
as in the PTB study (README), and BN-VAE's floor n γ² / 2 holds for training batches but not for the test
KL, which is evaluated with the batch norm's running statistics: both are strict xfails. A few seconds a run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_config
from vae_lab.models.sentence_vae import SentenceVAE
from vae_lab.module import LatentVariableModule
from vae_lab.posteriors.gaussian import GaussianPosterior
from vae_lab.schedules import Cyclical
from vae_lab.train import run

TINY = ["debug=fast", "model.embedding_dim=32", "model.hidden_dim=32", "model.latent_dim=8", "dataset.limit=400",
        "trainer.max_epochs=4", "trainer.limit_train_batches=20", "optimizer.lr=3e-3", "callbacks.early_stopping=null",
        "annealing=constant"]
LATENTS, GAMMA, AE_STEPS = 8, 0.6, 40


def train(make_config, name: str, overrides: list[str]) -> tuple[dict, list[dict]]:
    cfg = make_config([*TINY, *overrides], name)
    run(cfg)
    folder = Path(cfg.paths.output_dir)
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines() if line.strip()]
    return json.loads((folder / "metrics.json").read_text()), history


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """``trained_once(name, overrides)``: one run per name for the module, shared by the tests that read it."""
    runs: dict[str, tuple[dict, list[dict]]] = {}

    def get(name: str, overrides: list[str]) -> tuple[dict, list[dict]]:
        if name not in runs:
            folder = tmp_path_factory.mktemp(name)
            runs[name] = train(lambda o, n: compose_config(o, folder / n), name, overrides)
        return runs[name]

    return get


def bn_vae_run(trained_once):
    return trained_once("bn_vae", [f"posterior.batch_norm_scale={GAMMA}"])


CYCLICAL = ["annealing=cyclical", "annealing.total_steps=80", "annealing.cycles=4", "annealing.ratio=0.5"]


def test_plain_training_collapses_in_this_setting(make_config):
    metrics, _ = train(make_config, "plain", [])
    assert metrics["test/kl"] < 0.05 and metrics["test/active_units"] == 0


def test_free_bits_keep_every_unit_active(make_config):
    metrics, _ = train(make_config, "free_bits", ["objective.free_bits=0.5"])
    assert metrics["test/kl"] > 1.0 and metrics["test/active_units"] == LATENTS


def test_free_bits_on_the_whole_kl_keep_the_kl_up(make_config):
    """``objective.free_bits_per_dim=false``: the batch's whole KL is held at >= free_bits nats."""
    metrics, _ = train(make_config, "free_bits_total", ["objective.free_bits=4", "objective.free_bits_per_dim=false"])
    assert metrics["test/kl"] > 1.0 and metrics["test/active_units"] >= 1


def test_bn_vae_holds_the_kl_above_its_floor_and_keeps_every_unit_active(trained_once):
    """In training the batch's means are batch-normalised with scale γ, so Σ_d mean(μ_d²) ≥ n γ² and the
    analytic KL of every batch is ≥ n γ² / 2 (Zhu et al. 2020); evaluation uses the running statistics."""
    metrics, history = bn_vae_run(trained_once)
    floor = LATENTS * GAMMA ** 2 / 2
    steps = [row["train/kl"] for row in history if "train/kl" in row]
    assert len(steps) == 80 and min(steps) >= floor * (1 - 1e-3)
    assert metrics["test/kl"] > 0.5 and metrics["test/active_units"] == LATENTS


@pytest.mark.xfail(strict=True, reason=(
    "BN-VAE's floor is a training-batch floor only (as vae_lab/posteriors/gaussian.py and "
    "conf/posterior/gaussian.yaml say): in evaluation GaussianPosterior._normalised "
    "normalises with nn.BatchNorm1d's running statistics, whose running_var (~0.06, "
    "accumulated with embedding dropout 0.5 on and from earlier encoder states) exceeds the variance of the "
    "eval-mode means (0.03-0.04), so the means shrink: test/kl 1.00 nats against the floor 1.44 (n=8, "
    "γ=0.6); the same test batches with batch statistics give 1.445; model.embedding_dropout=0: test/kl 1.17"))
def test_bn_vae_test_kl_is_above_its_floor(trained_once):
    metrics, _ = bn_vae_run(trained_once)
    assert metrics["test/kl"] >= LATENTS * GAMMA ** 2 / 2 * 0.9


def test_the_bn_vae_floor_holds_for_any_batch():
    torch.manual_seed(0)
    posterior = GaussianPosterior(latent_dim=6, in_features=5, batch_norm_scale=0.8).train()
    for shift in (0.0, 3.0):
        with torch.no_grad():
            params = posterior(torch.randn(64, 5) * 4 + shift)
        kl = 0.5 * (params.mean ** 2 + params.log_var.exp() - params.log_var - 1).sum(-1)
        assert float(kl.mean()) >= 6 * 0.8 ** 2 / 2 * (1 - 1e-3)
        assert torch.allclose(params.mean.pow(2).mean(0), torch.full((6,), 0.64), rtol=1e-3)  # shift 0 at the start


def test_autoencoder_pretraining_resets_the_decoder_once_then_free_bits_keep_the_kl(make_config, monkeypatch):
    """The KL weight is 0 for AE_STEPS steps, then 1; at that step the decoder (and only it) starts afresh."""
    calls, step = [], []
    real, real_start = SentenceVAE.reset_decoder, LatentVariableModule.on_train_batch_start

    def at_step(self, batch, batch_idx):
        step[:] = [self.global_step]
        return real_start(self, batch, batch_idx)

    def recording(self):
        encoder = {name: value.clone() for name, value in self.encoder.state_dict().items()}
        decoder = [p.detach().clone() for module in self.decoder_modules() for p in module.parameters()]
        parameters = real(self)
        calls.append((*step, all(torch.equal(encoder[name], value) for name, value in self.encoder.state_dict().items()),
                      all(not torch.equal(before, p) for before, p in zip(decoder, parameters) if p.dim() > 1)))
        return parameters

    monkeypatch.setattr(SentenceVAE, "reset_decoder", recording)
    monkeypatch.setattr(LatentVariableModule, "on_train_batch_start", at_step)
    metrics, history = train(make_config, "ae_free_bits", [f"objective.autoencoder_steps={AE_STEPS}",
                                                          "objective.free_bits=0.5"])
    assert calls == [(AE_STEPS, True, True)]  # once, at step N; the encoder kept, every decoder weight matrix new
    weights = [row["train/kl_weight"] for row in history if "train/kl_weight" in row]
    assert weights[:AE_STEPS] == [0.0] * AE_STEPS and set(weights[AE_STEPS:]) == {1.0}
    assert metrics["test/kl"] > 1.0 and metrics["test/active_units"] == LATENTS


def test_cyclical_annealing_runs_its_documented_schedule(trained_once):
    """KL weight per step: ``annealing.cycles`` cycles over ``total_steps``, each 0 -> 1 over its first half."""
    _, history = trained_once("cyclical", CYCLICAL)
    weights = [row["train/kl_weight"] for row in history if "train/kl_weight" in row]
    schedule = Cyclical(total_steps=80, cycles=4, ratio=0.5)
    assert weights == pytest.approx([schedule(step) for step in range(80)])
    assert [weights[i] for i in (0, 20, 40, 60)] == [0.0] * 4 and weights[-1] == 1.0


@pytest.mark.xfail(strict=True, reason=(
    "cyclical annealing (vae_lab/schedules.py Cyclical, applied as documented: see the test above) does not keep "
    "the KL up here: test/kl ~0.01 nats, 0 active units, as plain training (cycles 4 or 2, ratio 0.5, linear or "
    "sigmoid, up to 312 steps: all < 0.03); the weight-0 phases are too short for the decoder to take up z "
    "(under weight 0 throughout, the KL starts growing only after ~30-60 steps), and a code once learnt (4 nats) "
    "collapses as soon as the weight passes ~0.5; as on PTB (README, ptb_collapse/cyclical: KL 0.00)"))
def test_cyclical_annealing_keeps_the_kl_up(trained_once):
    metrics, _ = trained_once("cyclical", CYCLICAL)
    assert metrics["test/kl"] > 0.5 and metrics["test/active_units"] >= 1
