"""The remedies against posterior collapse keep the KL up where plain training collapses (issue 25).

The setting: the sentence VAE shrunk (embedding and GRU 32, 8 latents) on 400 PTB sentences, 80 steps at
learning rate 3e-3 with the KL weight at 1 from the first step (``annealing=constant``). Plain training
collapses there (test KL < 0.05 nats, no active unit); free bits, autoencoder pretraining then free bits,
and BN-VAE each keep every unit active. Cyclical annealing is not among them: it collapses in this setting
as in the PTB study (README). A few seconds a run.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from vae_lab.models.sentence_vae import SentenceVAE
from vae_lab.posteriors.gaussian import GaussianPosterior
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


def test_plain_training_collapses_in_this_setting(make_config):
    metrics, _ = train(make_config, "plain", [])
    assert metrics["test/kl"] < 0.05 and metrics["test/active_units"] == 0


def test_free_bits_keep_every_unit_active(make_config):
    metrics, _ = train(make_config, "free_bits", ["objective.free_bits=0.5"])
    assert metrics["test/kl"] > 1.0 and metrics["test/active_units"] == LATENTS


def test_bn_vae_holds_the_kl_above_its_floor_and_keeps_every_unit_active(make_config):
    """In training the batch's means are batch-normalised with scale γ, so Σ_d mean(μ_d²) ≥ n γ² and the
    analytic KL of every batch is ≥ n γ² / 2 (Zhu et al. 2020); evaluation uses the running statistics."""
    metrics, history = train(make_config, "bn_vae", [f"posterior.batch_norm_scale={GAMMA}"])
    floor = LATENTS * GAMMA ** 2 / 2
    steps = [row["train/kl"] for row in history if "train/kl" in row]
    assert len(steps) == 80 and min(steps) >= floor * (1 - 1e-3)
    assert metrics["test/kl"] > 0.5 and metrics["test/active_units"] == LATENTS


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
    calls = []
    real = SentenceVAE.reset_decoder

    def recording(self):
        encoder = {name: value.clone() for name, value in self.encoder.state_dict().items()}
        decoder = [p.detach().clone() for module in self.decoder_modules() for p in module.parameters()]
        parameters = real(self)
        calls.append((all(torch.equal(encoder[name], value) for name, value in self.encoder.state_dict().items()),
                      all(not torch.equal(before, p) for before, p in zip(decoder, parameters) if p.dim() > 1)))
        return parameters

    monkeypatch.setattr(SentenceVAE, "reset_decoder", recording)
    metrics, history = train(make_config, "ae_free_bits", [f"objective.autoencoder_steps={AE_STEPS}",
                                                          "objective.free_bits=0.5"])
    assert calls == [(True, True)]  # once; the encoder kept, every decoder weight matrix new
    weights = [row["train/kl_weight"] for row in history if "train/kl_weight" in row]
    assert weights[:AE_STEPS] == [0.0] * AE_STEPS and set(weights[AE_STEPS:]) == {1.0}
    assert metrics["test/kl"] > 1.0 and metrics["test/active_units"] == LATENTS
