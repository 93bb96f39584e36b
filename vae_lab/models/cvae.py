"""Conditional VAE that converts English verb tenses character by character.

x is a word (characters + <eos>), c its tense. The encoder LSTM starts from a state made from the
tense embedding e(c) and reads x; its final state gives q(z|x, c) = N(mu, diag sigma^2). The decoder
LSTM starts from a state made from [z, e(c')] and emits y under tense c'. Training maximises the
ELBO E_q log p(y|z, c') - kl_weight · KL(q(z|x, c) || p(z)) over the training verbs, where y is either x
itself (c' = c: the lab autoencodes each form, ``dataset.train_pairs=same``) or another form of the
same verb under a random tense (``dataset.train_pairs=all``: the conversions themselves). Conversion
encodes the source form under the source tense, takes the posterior mean and decodes greedily under
the target tense.

Teacher forcing follows its own schedule (ratio in [0, 1] per training step). The lab flips one coin
per word; here one coin per *batch* (``teacher_forcing_unit="batch"``, the default): with
probability ratio the whole batch is teacher-forced through one fused ``nn.LSTM`` call over the
sequence, otherwise it runs free (greedy inputs, a loop over <= ~20 characters). Each word sees the
same probability of teaching as in the lab, and the fused call makes the taught batches several
times faster. ``teacher_forcing_unit="word"`` flips a coin per word as the lab does (always the loop).

Options beyond the lab's nets: ``bidirectional`` (both encoder directions start from e(c); their
final states feed the posterior), ``feed_latent`` ([z, e(c')] appended to every decoder input, not
only the initial state), ``dropout`` and ``char_dropout`` (decoder input characters hidden in
training), and the prior (``prior=``, conf/prior/): ``normal`` N(0, I) as the lab,
``mixture`` learned Gaussians, or ``aggregate``, trained against N(0, I) and then evaluated and
sampled with the aggregate posterior of ``prior.components`` training forms (``conf/prior/``).

The nets are nets/rnn.py's: an ``RNNEncoder`` (LSTM, started from the tense, its final hidden and cell
states read) and a ``LatentInitialisedDecoder`` conditioned on [z, e(c)] (h0 through tanh), decoded
token by token with ``decode_tokens``.

The Gaussian score (prior draws whose four decodings are the four forms of a real verb) is where
the prior matters: a latent precise enough to spell unseen stems decodes draws from N(0, I) to new,
consistently inflected pseudo-verbs, while draws from the aggregate posterior land on real verbs. The
aggregate posterior of training forms, as a prior, costs held-out verbs NLL; a share of N(0, I) in it
bounds that cost (``prior.normal_weight``); the measured trade-off is in the README
(experiments/cvae_prior_frontier.py).
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_lab.devices import generator_on
from vae_lab.errors import ConfigError
from vae_lab.metrics.tense import exact_match, gaussian_score, mean_char_bleu
from vae_lab.models.base import LatentVariableModel
from vae_lab.objectives import LogWeights
from vae_lab.nets.rnn import LatentInitialisedDecoder, RNNEncoder, decode_tokens, host_lengths, initial_state
from vae_lab.outputs import TextOutput
from vae_lab.penalties import DecoderTargets
from vae_lab.posteriors.gaussian import GaussianPosterior
from vae_lab.priors.base import Prior
from vae_lab.priors.mixture import StandardNormalPrior
from vae_lab.regularisers import Encoding
from vae_lab.schedules import Constant, Schedule

if TYPE_CHECKING:  # the datamodule's tokenizer (vae_lab/data/verb_tense.py), handed in by model_kwargs
    from vae_lab.data.verb_tense import CharTokenizer


class TenseCVAE(LatentVariableModel):
    """Character LSTM encoder/decoder conditioned on the tense; a posterior from ``conf/posterior/`` and a
    prior from ``conf/prior/`` (factories called with ``latent_dim``; a Gaussian and N(0, I) by default),
    scored by the pair's regulariser under ``bound`` (vae_lab/regularisers.py). The data gives the
    character ``tokenizer``, the ``tenses``' names and the ``lexicon`` of verbs (``model_kwargs``)."""

    reads = "verb_forms"
    modes = {"convert": ("word", "source", "target", "words_file")}

    def __init__(self, tokenizer: "CharTokenizer", tenses: Sequence[str], lexicon: Sequence[tuple[str, ...]] = (),
                 embedding_dim: int = 64, hidden_dim: int = 256, latent_dim: int = 32, condition_dim: int = 8,
                 teacher_forcing: Schedule | float | None = None, teacher_forcing_unit: str = "batch",
                 bidirectional: bool = False, feed_latent: bool = False, dropout: float = 0.0,
                 char_dropout: float = 0.0, max_length: int = 24, prior: Callable[..., Prior] | None = None,
                 gaussian_samples: int = 100, gaussian_seed: int = 0, bleu_smoothing: str = "floor",
                 posterior: Callable[..., nn.Module] | None = None, bound: str = "elbo"):
        super().__init__()
        if teacher_forcing_unit not in ("batch", "word"):
            raise ConfigError(f"model.teacher_forcing_unit: unknown {teacher_forcing_unit!r}; allowed: batch, word")
        self.tokenizer, self.tenses, self.lexicon = tokenizer, tuple(tenses), list(lexicon)
        self.hidden_dim, self.latent_dim, self.max_length = hidden_dim, latent_dim, max_length
        self.feed_latent = feed_latent
        for key, rate in (("dropout", dropout), ("char_dropout", char_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"model.{key}={rate}: must lie in [0, 1)")
        self.char_dropout = char_dropout
        self.dropout = nn.Dropout(dropout)
        directions = 2 if bidirectional else 1
        if teacher_forcing is None or isinstance(teacher_forcing, (int, float)):
            teacher_forcing = Constant(1.0 if teacher_forcing is None else float(teacher_forcing))
        self.teacher_forcing = teacher_forcing
        self.teacher_forcing_unit = teacher_forcing_unit
        self.teacher_forcing_ratio = self.teacher_forcing(0)
        self.gaussian_samples, self.gaussian_seed, self.bleu_smoothing = gaussian_samples, gaussian_seed, bleu_smoothing

        self.char_embedding = nn.Embedding(tokenizer.vocab_size, embedding_dim, padding_idx=tokenizer.PAD)
        self.tense_embedding = nn.Embedding(len(self.tenses), condition_dim)
        self.encoder_init = nn.Linear(condition_dim, 2 * directions * hidden_dim)
        self.encoder = RNNEncoder("lstm", embedding_dim, hidden_dim, bidirectional=bidirectional, with_cell=True)
        self._build_posterior(posterior or GaussianPosterior, latent_dim, in_features=self.encoder.output_size)
        self.decoder = LatentInitialisedDecoder("lstm", embedding_dim, hidden_dim, latent_dim + condition_dim,
                                                feed_condition=feed_latent, tanh_hidden=True)
        self.to_logits = nn.Linear(hidden_dim, tokenizer.vocab_size)
        self._build_prior(prior or StandardNormalPrior, latent_dim, bound)
        self.standard_normal = StandardNormalPrior(latent_dim)  # for gaussian_score_normal
        self._register_load_state_dict_pre_hook(_own_lstms_to_nets)

    # ------------------------------------------------------------------ nets

    def tense_index(self, tense: str | int, key: str = "tense") -> int:
        """Index of a tense given by name (sp, tp, pg, p) or index; a clear one-line error otherwise."""
        if isinstance(tense, int) and not isinstance(tense, bool) and 0 <= tense < len(self.tenses):
            return tense
        if isinstance(tense, str) and tense in self.tenses:
            return self.tenses.index(tense)
        raise ConfigError(f"{key}: unknown tense {tense!r}; allowed: {', '.join(self.tenses)}")

    def posterior_params(self, tokens: Tensor, lengths: Tensor, tense: Tensor):
        """The parameters of q(z|x, c) ``[batch, latent]`` (means and log-variances, or Bernoulli logits);
        ``lengths`` incl. <eos>. The encoder starts from a state made from e(c)."""
        directions = self.encoder.num_directions
        state = initial_state(self.encoder_init(self.tense_embedding(tense)), "lstm", directions, self.hidden_dim,
                              tanh_hidden=True)
        return self.posterior(self.encoder(self.dropout(self.char_embedding(tokens)), lengths, state))

    def encode(self, batch: dict):
        """The posterior's parameters ``[batch, latent]`` of the (source) forms under their tenses."""
        return self.posterior_params(batch["tokens"], host_lengths(batch), batch["tense"])

    def _condition(self, z: Tensor, tense: Tensor) -> Tensor:
        """[z, e(c)] ``[batch, latent + cond]``: the decoder's initial state comes from it (and every
        input step is given it with ``feed_latent``)."""
        return torch.cat([z, self.tense_embedding(tense)], dim=-1)

    def _embed(self, ids: Tensor) -> Tensor:
        """Embedded decoder input ids ``[batch, len]`` -> ``[batch, len, emb]``.

        In training, ``char_dropout`` of the characters are replaced by <pad> (a zero embedding), so
        the decoder must take them from z (Bowman et al.'s word dropout, per character)."""
        if self.training and self.char_dropout > 0:
            dropped = torch.rand(ids.shape, device=ids.device) < self.char_dropout
            ids = ids.masked_fill(dropped & (ids != self.tokenizer.SOS), self.tokenizer.PAD)
        return self.dropout(self.char_embedding(ids))

    def _step(self, condition: Tensor) -> Callable:
        """One decoder step for ``decode_tokens``: input ids ``[batch]``, state -> logits ``[batch, vocab]``, state."""
        def step(inputs: Tensor, state):
            output, state = self.decoder.step(self._embed(inputs.unsqueeze(1)), condition, state)
            return self.to_logits(self.dropout(output)), state
        return step

    def decoder_logits(self, z: Tensor, tense: Tensor, targets: Tensor, teach: Tensor | bool = True) -> Tensor:
        """Logits ``[batch, len, vocab]`` of p(x|z, c) for targets ``[batch, len]`` (chars + <eos>).

        ``teach=True``: teacher forcing, one fused LSTM call. Otherwise the decoder runs step by step
        and feeds back its own greedy choices, except for the words where ``teach [batch]`` is true.
        """
        condition = self._condition(z, tense)
        sos = torch.full_like(targets[:, :1], self.tokenizer.SOS)
        if teach is True:
            inputs = torch.cat([sos, targets[:, :-1]], dim=1)  # [batch, len]
            return self.to_logits(self.dropout(self.decoder(self._embed(inputs), condition)))
        step, state = self._step(condition), self.decoder.state_from(condition)
        inputs, steps = sos[:, 0], []
        for t in range(targets.shape[1]):
            logits, state = step(inputs, state)
            steps.append(logits)
            inputs = logits.argmax(-1)
            if teach is not False:
                inputs = torch.where(teach, targets[:, t], inputs)
        return torch.stack(steps, dim=1)

    @torch.no_grad()
    def greedy(self, z: Tensor, tense: Tensor) -> list[str]:
        """Greedy decodings of latents ``[batch, latent]`` under tenses ``[batch]``."""
        condition = self._condition(z, tense)
        rows = decode_tokens(self._step(condition), self.decoder.state_from(condition),
                             torch.full_like(tense, self.tokenizer.SOS), self.tokenizer.EOS, self.max_length)
        return [self.tokenizer.decode(row) for row in rows]

    # ------------------------------------------------------------------ the family interface

    def decoder_modules(self) -> list[nn.Module]:
        return [self.decoder, self.to_logits]
    def set_step(self, step: int) -> dict[str, float]:
        """Follow the teacher-forcing schedule at training step ``step``."""
        self.teacher_forcing_ratio = float(self.teacher_forcing(step))
        return {"teacher_forcing": self.teacher_forcing_ratio}

    def _teach(self, batch_size: int, device: torch.device) -> Tensor | bool:
        """Which words are teacher-forced in this training batch (always all in evaluation)."""
        ratio = self.teacher_forcing_ratio
        if not self.training or ratio >= 1.0:
            return True
        if ratio <= 0.0:
            return False
        if self.teacher_forcing_unit == "batch":
            return bool(torch.rand(()) < ratio)
        return torch.rand(batch_size, device=device) < ratio

    def log_weights(self, batch: dict, num_samples: int = 1, encoded=None) -> LogWeights:
        """log p(y|z, c') + log p(z) - log q(z|x, c) ``[k, batch]``, z ~ q(z|x, c) (``encoded``: its parameters,
        already computed).

        x = ``tokens`` under c = ``tense``; y, c' = ``target_tokens``, ``target_tense`` on conversion
        batches (val/test, and training with ``dataset.train_pairs=all``), else y = x, c' = c (the
        ELBO of each form). On conversion pairs this bounds log p(y|c') with q(z|x, c) as proposal.
        """
        tokens, tense = batch["tokens"], batch["tense"]
        target_tokens = batch.get("target_tokens", tokens)
        target_tense = batch.get("target_tense", tense)
        lengths = batch.get("target_lengths", batch["lengths"])
        size, length = target_tokens.shape
        params = encoded if encoded is not None else self.posterior_params(tokens, host_lengths(batch), tense)
        z = self.posterior.draw(params, num_samples, relaxed=self.training)  # [k, batch, latent]
        targets = target_tokens.repeat(num_samples, 1)  # [k batch, len]
        logits = self.decoder_logits(z.flatten(0, 1), target_tense.repeat(num_samples), targets,
                                     self._teach(num_samples * size, tokens.device))
        nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=self.tokenizer.PAD, reduction="none")
        log_likelihood = -nll.view(num_samples, size, length).sum(-1)  # [k, batch]
        encoding = Encoding(self.posterior, [params], [z], self.training, num_samples, size, latents=z)
        return self.pack_log_weights(log_likelihood, encoding, num_units=lengths, encoded=params,
                                     decoder_targets=partial(self._decoder_targets, batch, target_tokens, target_tense))

    def _decoder_targets(self, batch: dict, target_tokens: Tensor, target_tense: Tensor) -> DecoderTargets:
        """What the decoder emits for each example, padded to ``max_length`` + <eos>, and its -log p under other
        z, for ``penalty=prior_decoding``: the verb's four forms under the four tenses when the batch carries
        them (``dataset.paradigms=true``: a draw is decoded to a whole verb), else the example's target under
        its tense."""
        width = self.max_length + 1
        paradigm = batch.get("paradigm_tokens")
        tokens = target_tokens if paradigm is None else paradigm
        tokens = F.pad(tokens[..., :width], (0, max(0, width - tokens.shape[-1])), value=self.tokenizer.PAD)
        tensors = {"tokens": tokens} if paradigm is not None else {"tokens": tokens, "tense": target_tense}

        def nll(z: Tensor, targets: dict[str, Tensor]) -> Tensor:
            tokens = targets["tokens"]
            if "tense" in targets:
                tense = targets["tense"]
            else:  # [n, tenses, width]: each draw decoded under every tense
                tense = torch.arange(tokens.shape[1], device=z.device).repeat(tokens.shape[0])
                z, tokens = z.repeat_interleave(tokens.shape[1], dim=0), tokens.flatten(0, 1)
            tokens = tokens[:, :max(1, int((tokens != self.tokenizer.PAD).sum(-1).max()))]
            logits = self.decoder_logits(z, tense, tokens, True)
            nll = F.cross_entropy(logits.transpose(1, 2), tokens, ignore_index=self.tokenizer.PAD, reduction="none")
            return nll.sum(-1).view(targets["tokens"].shape[0], -1).sum(-1)

        return DecoderTargets(tensors, nll, self.training)

    @torch.no_grad()
    def text_pairs(self, batch: dict) -> tuple[list[str], list[str]]:
        """Greedy conversions of the batch (the posterior's point: its mean, the most probable binary z;
        reconstructions on batches without targets) and their references."""
        mean = self.posterior.point(self.posterior_params(batch["tokens"], host_lengths(batch), batch["tense"]))
        target_tokens = batch.get("target_tokens", batch["tokens"])
        hypotheses = self.greedy(mean, batch.get("target_tense", batch["tense"]))
        return hypotheses, [self.tokenizer.decode(row) for row in target_tokens.tolist()]

    def text_metrics(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        return {"bleu": mean_char_bleu(hypotheses, references, self.bleu_smoothing),
                "exact_match": exact_match(hypotheses, references)}

    @torch.no_grad()
    def decode_prior(self, num_samples: int, generator: torch.Generator | None = None,
                     prior: nn.Module | None = None) -> list[tuple[str, ...]]:
        """Draw z from the prior (the model's unless given) and decode each under every tense:
        ``num_samples`` tuples (sp, tp, pg, p)."""
        device = self.to_logits.weight.device
        z = (prior or self.prior).sample(num_samples, generator).to(device)
        num_tenses = self.tense_embedding.num_embeddings
        tense = torch.arange(num_tenses, device=device).repeat(num_samples)  # [samples tenses]
        words = self.greedy(z.repeat_interleave(num_tenses, dim=0), tense)
        return [tuple(words[i: i + num_tenses]) for i in range(0, len(words), num_tenses)]

    def epoch_metrics(self, datamodule, stage: str) -> dict[str, float]:
        """The lab's Gaussian score on ``gaussian_samples`` prior draws (fixed seed), against every verb:
        ``gaussian_score`` draws from the model's prior, ``gaussian_score_normal`` from N(0, I) (the
        lab's literal draw; the same number when the prior is N(0, I)). Validation's draws are the same
        at every evaluation; the test's are others (``gaussian_seed + 1``), so a checkpoint kept for its
        val Gaussian score is not tested on the draws that selected it."""
        seed = self.gaussian_seed + (stage == "test")

        def score(prior: nn.Module) -> float:
            generator = generator_on(self.tense_embedding.weight, seed)
            return gaussian_score(self.decode_prior(self.gaussian_samples, generator, prior), self.lexicon)

        model_score = score(self.prior)
        normal_score = model_score if self.prior.is_standard_normal else score(self.standard_normal)
        return {**super().epoch_metrics(datamodule, stage),  # the prior's own (an RBM's log Z)
                "gaussian_score": model_score, "gaussian_score_normal": normal_score}

    def sample_outputs(self, num_samples: int, generator: torch.Generator | None = None) -> TextOutput:
        """One row per prior draw: its decodings under sp, tp, pg, p, in aligned columns ('-': empty)."""
        decodings = [[word or "-" for word in row] for row in self.decode_prior(num_samples, generator)]
        width = max([len(w) for row in decodings for w in row] + [len(t) for t in self.tenses]) + 2
        return TextOutput(["".join(word.ljust(width) for word in row).rstrip() for row in decodings])

    def run_mode(self, mode: str, cfg, datamodule, output_dir) -> None:
        from vae_lab.models.cvae_modes import convert

        convert(cfg, self, output_dir)

    @torch.no_grad()
    def convert(self, words: list[str], sources, targets) -> list[str]:
        """Convert ``words`` from tense(s) ``sources`` to ``targets`` (names sp/tp/pg/p or indices;
        one value for all words or one per word), greedily from the posterior mean."""
        words = [self.tokenizer.check(w, "word") for w in words]
        sources = [self.tense_index(s, "source") for s in _per_word(sources, len(words))]
        targets = [self.tense_index(t, "target") for t in _per_word(targets, len(words))]
        if not words:
            return []
        device = self.to_logits.weight.device
        tokens, lengths = self.tokenizer.pad(words)
        mean = self.posterior.point(self.posterior_params(tokens.to(device), lengths,
                                                          torch.tensor(sources, device=device)))
        return self.greedy(mean, torch.tensor(targets, device=device))


def _per_word(values, count: int) -> list:
    if isinstance(values, (str, int)):
        return [values] * count
    values = list(values)
    if len(values) != count:
        raise ValueError(f"{len(values)} tenses for {count} words")
    return values


def _own_lstms_to_nets(state_dict: dict, prefix: str, *args) -> None:
    """A checkpoint from before the CVAE's nets were nets/rnn.py's kept its own LSTMs: ``encoder.*`` (now
    ``encoder.rnn.*``), ``decoder_init.*`` (now ``decoder.to_state.*``) and ``decoder.*`` (now
    ``decoder.rnn.*``); the same weights, the same maths."""
    if prefix + "decoder_init.weight" not in state_dict:
        return
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for old, new in (("encoder.", "encoder.rnn."), ("decoder_init.", "decoder.to_state."), ("decoder.", "decoder.rnn.")):
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                break
