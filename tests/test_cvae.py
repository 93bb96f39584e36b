"""TenseCVAE: shapes of its log weights, teacher forcing, overfitting a few verbs, conversion errors."""
from __future__ import annotations

import pytest
import torch

from vae_lab.schedules import Linear
from vae_lab.data.verb_tense import (
    TENSES, CharTokenizer, Collate, FormDataset, PairDataset, conversion_pairs, parse_tense_pairs, read_lemminflect,
)
from vae_lab.models.cvae import TenseCVAE
from functools import partial

from vae_lab.objectives import elbo, training_objective
from vae_lab.priors.mixture import AggregatePosteriorPrior, MixturePrior


@pytest.fixture(scope="module")
def verbs():
    return read_lemminflect()[::300][:20]


def tiny_model(**kwargs) -> TenseCVAE:
    torch.manual_seed(0)
    return TenseCVAE(CharTokenizer(), TENSES, **{"embedding_dim": 16, "hidden_dim": 64, "latent_dim": 8,
                                                 "condition_dim": 8, **kwargs})


@pytest.mark.parametrize("options", [{}, {"bidirectional": True, "feed_latent": True}])
def test_log_weights_shapes_and_parts(verbs, options):
    batch = Collate(CharTokenizer())(list(FormDataset(verbs[:5])))
    model = tiny_model(**options).eval()
    weights = model.log_weights(batch, num_samples=3)
    assert weights.log_likelihood.shape == weights.prior.shape == weights.posterior.shape == (3, 20)
    assert weights.kl_per_dim.shape == (20, 8)
    assert weights.num_units.tolist() == [len(form) + 1 for verb in verbs[:5] for form in verb]
    assert torch.all(weights.log_likelihood < 0) and torch.isfinite(elbo(weights)).all()


def test_teacher_forcing_schedule_and_free_running(verbs):
    batch = Collate(CharTokenizer())(list(FormDataset(verbs[:5])))
    model = tiny_model(teacher_forcing=Linear(steps=10, start=1.0, end=0.0), teacher_forcing_unit="word",
                       feed_latent=True)
    assert model.set_step(0) == {"teacher_forcing": 1.0}
    assert model.set_step(5) == {"teacher_forcing": 0.5}
    assert model.set_step(20) == {"teacher_forcing": 0.0}
    model.train()
    training_objective(model.log_weights(batch), kl_weight=0.5).loss.backward()
    assert model.decoder.rnn.weight_hh_l0.grad.abs().sum() > 0
    # teaching every word step by step gives the fused call's logits
    z, tense = torch.randn(20, 8), batch["tense"]
    fused = model.decoder_logits(z, tense, batch["tokens"], teach=True)
    stepped = model.decoder_logits(z, tense, batch["tokens"], teach=torch.ones(20, dtype=torch.bool))
    assert torch.allclose(fused, stepped, atol=1e-5)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and fair on a shared machine
    yield
    torch.set_num_threads(threads)


def test_tiny_model_overfits_twenty_verbs(verbs, one_thread):
    collate = Collate(CharTokenizer())
    train = collate(list(FormDataset(verbs)))
    pairs = collate(PairDataset(conversion_pairs(verbs, parse_tense_pairs("all"))).items)
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    reconstruction = {}
    for step in range(1, 301):
        loss = training_objective(model.log_weights(train), kl_weight=0.01).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            model.eval()
            reconstruction = model.text_metrics(*model.text_pairs(train))
            model.train()
            if reconstruction["exact_match"] == 1.0:
                break
    assert reconstruction == {"bleu": 1.0, "exact_match": 1.0}
    model.eval()
    assert model.text_metrics(*model.text_pairs(pairs))["exact_match"] > 0.5  # conversions of these verbs


def test_prior_decodings_and_gaussian_score():
    model = tiny_model().eval()
    rows = model.sample_outputs(3, torch.Generator().manual_seed(0)).lines
    assert len(rows) == 3 and all(len(row.split()) <= 4 for row in rows)
    decodings = model.decode_prior(3, torch.Generator().manual_seed(0))
    assert all(len(forms) == 4 for forms in decodings)

    model.lexicon = [decodings[0]] if all(decodings[0]) else []
    metrics = model.epoch_metrics(None, "val")
    # the first draw decodes to its own four forms, which form the whole lexicon when they are words
    expected = sum(tuple(forms) in map(tuple, model.lexicon) for forms in decodings) / 3
    assert metrics["gaussian_score"] == pytest.approx(expected)
    assert metrics["gaussian_score_normal"] == metrics["gaussian_score"]  # the prior is N(0, I): one decode


def test_test_gaussian_draws_are_not_validations(monkeypatch):
    """A checkpoint selected on val/gaussian_score_normal must not be tested on the draws that selected it."""
    model = tiny_model().eval()
    drawn = []
    decode = model.decode_prior
    monkeypatch.setattr(model, "decode_prior", lambda n, generator, prior: drawn.append(
        torch.randn(2, generator=generator)) or decode(n, generator, prior))
    for stage in ("val", "val", "test", "test"):
        model.epoch_metrics(None, stage)
    assert torch.equal(drawn[0], drawn[1]) and torch.equal(drawn[2], drawn[3])  # fixed draws per stage
    assert not torch.equal(drawn[0], drawn[2])


def test_convert_validates_its_inputs():
    model = tiny_model().eval()
    assert len(model.convert(["abandon", "went"], "sp", ["p", "sp"])) == 2
    with pytest.raises(ValueError, match="^source: unknown tense 'past'; allowed: sp, tp, pg, p$"):
        model.convert(["abandon"], "past", "p")
    with pytest.raises(ValueError, match=r"^word: 'Abandon' is not a word of lowercase letters; allowed characters: a-z$"):
        model.convert(["Abandon"], "sp", "p")


def test_convert_mode(tmp_path, capsys):
    from omegaconf import OmegaConf

    from vae_lab.models.cvae_modes import convert

    model = tiny_model()
    cfg = OmegaConf.create({"word": "abandon", "source": "sp", "target": "p", "words_file": None})
    assert convert(cfg, model, tmp_path) == {"conversions": 1}
    assert "abandon (sp) -> " in capsys.readouterr().out
    words = tmp_path / "verbs.txt"
    words.write_text("abandon\n# a comment\n\nwent p sp\n")
    cfg = OmegaConf.create({"word": None, "source": "sp", "target": "pg", "words_file": str(words)})
    assert convert(cfg, model, tmp_path) == {"conversions": 2}
    lines = (tmp_path / "conversions.txt").read_text().splitlines()
    assert [line.split("\t")[:3] for line in lines] == [["abandon", "sp", "pg"], ["went", "p", "sp"]]
    with pytest.raises(ValueError, match="^target: unknown tense 'future'; allowed: sp, tp, pg, p$"):
        convert(OmegaConf.create({"word": "go", "source": "sp", "target": "future"}), model, tmp_path)
    with pytest.raises(ValueError, match="^word: 'go2' is not a word of lowercase letters; allowed characters: a-z$"):
        convert(OmegaConf.create({"word": "go2", "source": "sp", "target": "p"}), model, tmp_path)


def test_conversion_batches_decode_the_target_form(verbs):
    pairs = conversion_pairs(verbs[:5], parse_tense_pairs("all"))
    batch = Collate(CharTokenizer())(PairDataset(pairs).items)
    weights = tiny_model().eval().log_weights(batch, num_samples=2)
    assert weights.num_units.tolist() == [len(pair[2]) + 1 for pair in pairs]


def test_mixture_prior_trains_and_is_sampled(verbs):
    batch = Collate(CharTokenizer())(list(FormDataset(verbs[:5])))
    model = tiny_model(prior=partial(MixturePrior, components=6)).train()
    weights = model.log_weights(batch)
    assert weights.kl_per_dim is None  # no closed form: the KL is log q - log p at the draws
    assert torch.allclose(weights.kl(), (weights.posterior - weights.prior)[0])
    training_objective(weights, kl_weight=0.5).loss.backward()
    assert model.prior.means.grad.abs().sum() > 0 and model.prior.logits.grad.abs().sum() > 0
    model.eval()
    rows = model.decode_prior(3, torch.Generator().manual_seed(0))
    assert rows == model.decode_prior(3, torch.Generator().manual_seed(0)) and len(rows) == 3


class TrainingForms:
    """The training half of the data contract (``training_batch``, ``num_training_items``) over some verbs."""

    def __init__(self, verbs):
        self.forms = list(FormDataset(verbs))

    def num_training_items(self) -> int:
        return len(self.forms)

    def training_batch(self, indices):
        return Collate(CharTokenizer())([self.forms[i] for i in indices])


def test_aggregate_prior_trains_against_the_standard_normal_and_evaluates_with_the_fit(verbs):
    batch = Collate(CharTokenizer())(list(FormDataset(verbs[:5])))
    model = tiny_model(prior=partial(AggregatePosteriorPrior, components=30), dropout=0.3).train()
    assert model.log_weights(batch).kl_per_dim is not None  # N(0, I), analytic, in training
    model.prepare_evaluation(TrainingForms(verbs))
    assert model.training and bool(model.prior.fitted)  # fitting leaves the mode as it was
    assert model.log_weights(batch).kl_per_dim is not None  # still N(0, I) while training
    model.eval()
    weights = model.log_weights(batch, num_samples=2)
    assert weights.kl_per_dim is None and torch.isfinite(weights.prior).all()
    # the components are the posteriors of training forms, deterministically chosen
    means = model.prior.means.clone()
    model.prepare_evaluation(TrainingForms(verbs))
    assert torch.equal(means, model.prior.means)
    forms = list(FormDataset(verbs))
    encoded = model.encode(Collate(CharTokenizer())(forms)).mean
    assert torch.cdist(means, encoded).min(dim=1).values.max() < 1e-4
    model.lexicon = verbs
    scores = model.epoch_metrics(None, "val")
    assert set(scores) == {"gaussian_score", "gaussian_score_normal"}
