"""What a family asks of its prior p(z): the ``Prior`` base every prior of ``conf/prior/`` derives from."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


def training_subset(size: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` indices of ``size`` training items for the aggregate prior: a random subset, drawn with
    replacement when there are fewer items than ``count``."""
    if size >= count:
        return torch.randperm(size, generator=generator)[:count]
    return torch.randint(size, (count,), generator=generator)


class Prior(nn.Module):
    """What a family asks of its prior p(z) (``conf/prior/``). A prior file is a subclass of this and a
    config; nothing else changes.

    - Built by the family as ``prior(latent_dim=n)``, n its number of latents (a prior that needs a
      layout of them, as the RBM's halves, takes it from its own config keys); then ``attach(model)``
      binds it to the model it serves (default: nothing): a prior that encodes inputs of its own (the
      VampPrior's pseudo-inputs) keeps the model's ``encode_inputs`` and reads its ``input_shape()``.
    - ``support``: what z it is a density of, its column of the regulariser table
      (vae_lab/regularisers.py): ``continuous`` (z in R^n), ``boltzmann`` (binary z, a Boltzmann
      machine), ``categorical`` (one-hot groups).
    - ``offers``: the named methods beyond this base that it gives the regulariser cells (the RBM's
      ``log_z_train``, ``expected_energy``, …); a cell names what it needs and is refused, before
      anything trains, with a prior that does not offer it. Cells call nothing else of a prior.
    - ``requires``: the model hooks it calls (``encode_inputs``, ``input_shape``); a family that does not
      offer them (``LatentVariableModel.offers``) is refused, before anything is built.
    - ``log_prob(z)`` ``[..., dim] -> [...]``; ``sample(n, generator)`` ``[n, dim]``; ``analytic_kl``: the
      KL to a diagonal Gaussian posterior is N(0, I)'s closed form; ``is_standard_normal``: p(z) is
      N(0, I) now.
    - ``prepare_evaluation(model, datamodule)`` runs before each val/test epoch,
      ``evaluation_metrics()`` adds the prior's own figures to them and ``regularizer()`` its penalty
      to the training loss; all do nothing by default.
    """

    support: ClassVar[str] = "continuous"
    offers: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[frozenset[str]] = frozenset()
    analytic_kl = False
    is_standard_normal = False

    def attach(self, model: nn.Module) -> None:
        """Bind to the model this prior serves (after the model has built its nets); nothing by default."""

    def log_prob(self, z: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def prepare_evaluation(self, model: nn.Module, datamodule) -> None:
        pass

    def evaluation_metrics(self) -> dict[str, float]:
        return {}

    def regularizer(self) -> Tensor | float:
        """A penalty on the prior's parameters added to the training loss (none by default)."""
        return 0.0
