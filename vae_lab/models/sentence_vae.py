"""Sentence VAE (Bowman et al. 2016, "Generating Sentences from a Continuous Space").

RNN encoder -> q(z|x) -> RNN decoder whose initial state (and optionally every input) comes from z;
word dropout replaces decoder inputs by <unk> at training time only. The posterior is a part
(``posterior=``: Gaussian as Bowman et al., or Bernoulli latents with a relaxation), so is the prior
(``prior=``: N(0, I), a mixture, the aggregate posterior, or an RBM over Bernoulli latents); the pair's
regulariser comes from vae_lab/regularisers.py.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import sacrebleu
import torch
from torch import Tensor, nn

from vae_lab.errors import ConfigError
from vae_lab.models.base import LatentVariableModel
from vae_lab.nets.output import target_log_prob
from vae_lab.nets.rnn import LatentInitialisedDecoder, RNNEncoder, decode_tokens, host_lengths
from vae_lab.objectives import LogWeights
from vae_lab.outputs import TextOutput, publish
from vae_lab.posteriors.gaussian import GaussianPosterior
from vae_lab.priors.base import Prior
from vae_lab.priors.mixture import StandardNormalPrior
from vae_lab.regularisers import Encoding

if TYPE_CHECKING:  # the datamodule's vocabulary (vae_lab/data/vocab.py), handed in by model_kwargs
    from vae_lab.data.vocab import Vocabulary


class SentenceVAE(LatentVariableModel):
    """Bowman et al.'s sentence VAE over word ids.

    ``word_dropout`` is the rate at which decoder inputs are replaced by <unk> (Bowman's keep rate
    0.75 is ``word_dropout=0.25``); ``feed_latent`` also concatenates z to every decoder input;
    ``tie_embeddings`` shares the input embedding with the output softmax. ``posterior`` and ``prior``
    are factories from ``conf/posterior/`` and ``conf/prior/`` called with ``latent_dim`` (a Gaussian
    and N(0, I) by default); ``bound`` (``objective.bound``) picks the pair's regulariser.
    """

    reads = "sentences"
    modes = {"interpolate": ("sentence_a", "sentence_b", "steps")}

    def __init__(self, vocab: "Vocabulary", rnn_type: str = "gru", embedding_dim: int = 300,
                 hidden_dim: int = 256, latent_dim: int = 16, num_layers: int = 1,
                 bidirectional: bool = False, word_dropout: float = 0.0, embedding_dropout: float = 0.0,
                 rnn_dropout: float = 0.0, feed_latent: bool = False, tie_embeddings: bool = False,
                 max_decode_length: int = 60, prior: Callable[..., Prior] | None = None,
                 posterior: Callable[..., nn.Module] | None = None, bound: str = "elbo"):
        super().__init__()
        if not 0.0 <= word_dropout <= 1.0:
            raise ConfigError(f"model.word_dropout={word_dropout}: must lie in [0, 1] (1 - keep rate)")
        self.vocab, self.latent_dim = vocab, latent_dim
        self.word_dropout, self.max_decode_length = word_dropout, max_decode_length
        self.embedding = nn.Embedding(len(vocab), embedding_dim, padding_idx=vocab.pad)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.encoder = RNNEncoder(rnn_type, embedding_dim, hidden_dim, num_layers, bidirectional, rnn_dropout)
        self._build_posterior(posterior or GaussianPosterior, latent_dim, in_features=self.encoder.output_size)
        self.decoder = LatentInitialisedDecoder(rnn_type, embedding_dim, hidden_dim, latent_dim,
                                                num_layers, rnn_dropout, feed_condition=feed_latent)
        projection = [nn.Linear(hidden_dim, embedding_dim)] if tie_embeddings and hidden_dim != embedding_dim else []
        self.output = nn.Sequential(*projection, nn.Linear(embedding_dim if tie_embeddings else hidden_dim, len(vocab)))
        if tie_embeddings:
            self.output[-1].weight = self.embedding.weight
        self._build_prior(prior or StandardNormalPrior, latent_dim, bound)

    # -- vocabulary travels in the state dict, so a checkpoint cannot be read with another one
    def get_extra_state(self) -> dict:
        return self.vocab.state_dict()

    def set_extra_state(self, state: dict) -> None:
        if state["itos"] != self.vocab.itos:
            raise ConfigError("checkpoint: its vocabulary differs from this dataset's; restore it with "
                              "the dataset settings it was trained with (dataset=…, dataset.max_vocab=…)")

    # -- parts
    def encode(self, batch: dict):
        """The posterior's parameters ``[batch, dim]`` (``GaussianParams`` / ``BernoulliParams``)."""
        return self.posterior_params(batch)

    def posterior_params(self, batch: dict):
        """The posterior's parameters ``[batch, dim]``: means and log-variances, or Bernoulli logits."""
        embedded = self.embedding_dropout(self.embedding(batch["tokens"]))
        return self.posterior(self.encoder(embedded, host_lengths(batch)))

    def decoder_io(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder inputs ``<sos> w_1..w_T`` and targets ``w_1..w_T <eos>`` (pad after), ``[n, T+1]``."""
        n = tokens.shape[0]
        inputs = torch.cat([tokens.new_full((n, 1), self.vocab.sos), tokens], dim=1)
        targets = torch.cat([tokens, tokens.new_full((n, 1), self.vocab.pad)], dim=1)
        targets.scatter_(1, lengths.unsqueeze(1), self.vocab.eos)
        return inputs, targets

    def drop_words(self, inputs: Tensor) -> Tensor:
        """Replace each real word of the decoder input (not <sos>, not padding) by <unk> with the
        word-dropout rate; training only."""
        if not self.training or self.word_dropout == 0.0:
            return inputs
        drop = torch.rand(inputs.shape, device=inputs.device) < self.word_dropout
        drop &= inputs.ne(self.vocab.pad) & inputs.ne(self.vocab.sos)
        return inputs.masked_fill(drop, self.vocab.unk)

    def reconstruction_log_prob(self, tokens: Tensor, lengths: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) per row ``[n]`` for z ``[n, dim]``; tokens are tiled to n rows (k-major).

        Only real target positions go through the output softmax (no work on padding).
        """
        repeats = z.shape[0] // tokens.shape[0]
        tokens, lengths = tokens.repeat(repeats, 1), lengths.repeat(repeats)
        inputs, targets = self.decoder_io(tokens, lengths)  # [n, T+1]
        embedded = self.embedding_dropout(self.embedding(self.drop_words(inputs)))
        hidden = self.decoder(embedded, z)  # [n, T+1, hidden]
        mask = targets.ne(self.vocab.pad)  # [n, T+1]
        hidden = self.output[:-1](hidden[mask])  # [m, hidden] (the projection of tied embeddings, if any)
        token_log_prob = target_log_prob(hidden, self.output[-1], targets[mask])  # [m], no [m, vocab] kept
        rows = torch.arange(z.shape[0], device=z.device).unsqueeze(1).expand_as(mask)[mask]  # [m]
        return torch.zeros(z.shape[0], dtype=token_log_prob.dtype, device=z.device).index_add_(0, rows, token_log_prob)

    def log_weights(self, batch: dict, num_samples: int = 1, encoded=None) -> LogWeights:
        """log p(x|z) + log p(z) - log q(z|x) ``[k, batch]``, z from the posterior (relaxed in training for
        Bernoulli latents), scored by the pair's regulariser; ``encoded``: the parameters, already computed."""
        tokens, lengths = batch["tokens"], batch["lengths"]
        params = encoded if encoded is not None else self.posterior_params(batch)
        z = self.posterior.draw(params, num_samples, relaxed=self.training)  # [k, batch, dim]
        log_likelihood = self.reconstruction_log_prob(tokens, lengths, z.reshape(-1, self.latent_dim))
        encoding = Encoding(self.posterior, [params], [z], self.training, num_samples, len(lengths), latents=z)
        return self.pack_log_weights(log_likelihood, encoding, num_units=(lengths + 1).to(z.dtype), encoded=params)

    def decoder_modules(self) -> list[nn.Module]:
        """The decoder RNN (with its z -> state map) and the output layer; with tied embeddings the
        shared embedding stays (the encoder reads it), so only the projection before it is reset."""
        tied = self.output[-1].weight is self.embedding.weight
        return [self.decoder, *(self.output[:-1] if tied else [self.output])]

    # -- decoding
    @torch.no_grad()
    def decode(self, z: Tensor, greedy: bool = True, generator: torch.Generator | None = None) -> list[list[str]]:
        """Decode ``z [n, dim]`` token by token (argmax, or sampling from the softmax), for at most
        ``max_decode_length`` words and <eos>."""
        def step(token: Tensor, state):
            hidden, state = self.decoder.step(self.embedding(token.unsqueeze(1)), z, state)
            return self.output(hidden), state  # [n, vocab]

        first = z.new_full((z.shape[0],), self.vocab.sos, dtype=torch.long)
        ids = decode_tokens(step, self.decoder.state_from(z), first, self.vocab.eos, self.max_decode_length + 1,
                            greedy, generator)
        return [self.vocab.decode(row) for row in ids]

    def text_pairs(self, batch: dict) -> tuple[list[str], list[str]]:
        """Greedy reconstructions from the posterior's point (its mean; the most probable binary z), and the
        input sentences."""
        point = self.posterior.point(self.posterior_params(batch))
        hypotheses = [" ".join(words) for words in self.decode(point)]
        references = [" ".join(self.vocab.decode(row[:n])) for row, n in
                      zip(batch["tokens"].tolist(), batch["lengths"].tolist())]
        return hypotheses, references

    @staticmethod
    def text_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """Corpus BLEU-4 (sacrebleu, tokenised input kept as is), on a 0-1 scale."""
        bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize="none")
        return {"bleu": bleu.score / 100.0}

    def sample_outputs(self, num_samples: int, generator: torch.Generator | None = None,
                       greedy: bool = True) -> TextOutput:
        """Decodings of ``num_samples`` prior draws, one sentence a line."""
        device = next(self.parameters()).device
        z = self.prior.sample(num_samples, generator).to(device)
        return TextOutput([" ".join(words) for words in self.decode(z, greedy=greedy, generator=generator)])

    def run_mode(self, mode: str, cfg, datamodule, output_dir) -> None:
        """``interpolate``: the homotopy between ``sentence_a`` and ``sentence_b`` -> interpolation.txt."""
        missing = [key for key in ("sentence_a", "sentence_b") if not cfg.get(key)]
        if missing:
            raise ConfigError(f"mode=interpolate needs {' and '.join(k + '=…' for k in missing)} "
                              '(e.g. \'sentence_a="the company said"\' \'sentence_b="the market fell"\')')
        steps = 5 if cfg.get("steps") is None else cfg.steps  # validated with the config (vae_lab/validation.py)
        interpolation = TextOutput(self.interpolate(str(cfg.sentence_a), str(cfg.sentence_b), steps),
                                   columns=("decoding",))
        interpolation.show()
        publish(interpolation, output_dir, "interpolation")  # and a wandb table

    def interpolate(self, sentence_a: str, sentence_b: str, steps: int = 5) -> list[str]:
        """Homotopy: decode greedily along the line between the posterior points (means) of two sentences,
        both ends included (``steps`` points in between)."""
        device = next(self.parameters()).device
        ids = [torch.tensor(self.vocab.encode(s.split()) or [self.vocab.unk]) for s in (sentence_a, sentence_b)]
        lengths = torch.tensor([len(x) for x in ids], device=device)
        tokens = nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=self.vocab.pad).to(device)
        mean = self.posterior.point(self.posterior_params({"tokens": tokens, "lengths": lengths}))
        weights = torch.linspace(0, 1, steps + 2, device=device).unsqueeze(1)  # [steps + 2, 1]
        path = (1 - weights) * mean[0] + weights * mean[1]  # [steps + 2, dim]
        return [" ".join(words) for words in self.decode(path)]
