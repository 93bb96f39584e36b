"""The one LightningModule: trains and evaluates any model family through its log weights."""
from __future__ import annotations

from typing import Any, Callable

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn
from torchmetrics import CatMetric, SumMetric

from vae_lab.devices import generator_on
from vae_lab.errors import UserError
from vae_lab.metrics.likelihood import active_units, importance_weighted_nll, perplexity
from vae_lab.models.base import LatentVariableModel
from vae_lab.objectives import training_objective

EVAL_MEANS = ("elbo", "rec", "kl", "bound", "nll")  # reported per example; then the family's terms and metrics
EVAL_SUMS = (*EVAL_MEANS, "units", "count")
TRAIN_SUMS = ("elbo", "rec", "kl", "bound", "units", "count")


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite."""


class LatentVariableModule(pl.LightningModule):
    """One shared step for train / val / test over a ``LatentVariableModel``.

    Training optimises ``training_objective`` with k draws (``bound``: the ELBO averaged over them, or
    the IW bound), KL weight and free bits, plus the family's ``regularizer()``. Evaluation
    accumulates, over the whole split, the ELBO parts, the importance-weighted NLL (``val_samples`` /
    ``test_samples`` draws), perplexities where the family counts predicted units, active units and
    mutual information where its posterior defines them, the family's text metrics on greedy
    decodings and its epoch metrics. ``final_metrics`` keeps the last value of every key, for
    metrics.json. The family is reached only through ``LatentVariableModel`` (vae_lab/models/base.py).
    """

    def __init__(self, model: LatentVariableModel, optimizer: Callable, kl_weight_schedule: Callable[[int], float],
                 k: int = 1, bound: str = "elbo", free_bits: float = 0.0, free_bits_per_dim: bool = True,
                 val_samples: int = 10, test_samples: int = 500, chunk_size: int = 50,
                 chunk_units: int | None = None, text_metrics: bool = True, max_text_batches: int | None = None,
                 lr_scheduler: Callable | None = None, check_finite_every: int = 50,
                 config: dict | None = None, autoencoder_steps: int = 0,
                 term_weights: dict[str, float] | None = None):
        super().__init__()
        self.model, self.optimizer_factory, self.lr_scheduler_factory = model, optimizer, lr_scheduler
        self.kl_weight_schedule, self.k, self.bound = kl_weight_schedule, k, bound
        self.free_bits, self.free_bits_per_dim = free_bits, free_bits_per_dim
        self.num_eval_samples = {"val": val_samples, "test": test_samples}
        self.chunk_size, self.chunk_units = chunk_size, chunk_units
        self.use_text_metrics, self.max_text_batches = text_metrics, max_text_batches
        self.check_finite_every, self.config = check_finite_every, config
        self.autoencoder_steps = int(autoencoder_steps)
        self.term_weights = dict(term_weights or {})
        self.eval_sums = nn.ModuleDict({stage: nn.ModuleDict({name: SumMetric() for name in EVAL_SUMS})
                                        for stage in ("val", "test")})
        self.eval_posteriors = nn.ModuleDict({stage: CatMetric() for stage in ("val", "test")})
        self.posterior_example = None  # one batch's posterior parameters: how to unpack the gathered ones
        self.text_outputs: dict[str, tuple[list[str], list[str]]] = {}
        self.final_metrics: dict[str, float] = {}
        self._train_sums: dict[str, torch.Tensor] = {}
        self._all_finite: torch.Tensor | None = None

    # -- training
    def kl_weight_at(self, step: int) -> float:
        """The KL weight at a training step: 0 while the autoencoder is pretrained
        (``objective.autoencoder_steps``), then the schedule, started afresh."""
        if step < self.autoencoder_steps:
            return 0.0
        return float(self.kl_weight_schedule(step - self.autoencoder_steps))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Autoencoder pretraining then free bits (Li et al. 2019): at step ``autoencoder_steps`` the
        decoder starts again from fresh weights (and fresh Adam moments); the encoder keeps what it learnt."""
        if self.autoencoder_steps > 0 and self.global_step == self.autoencoder_steps:
            parameters = self.model.reset_decoder()
            for optimizer in self.trainer.optimizers:
                for parameter in parameters:
                    optimizer.state.pop(parameter, None)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        step = self.global_step
        extra = self.model.set_step(step)
        kl_weight = self.kl_weight_at(step)
        free_bits = self.free_bits if step >= self.autoencoder_steps else 0.0
        log_weights = self.model.log_weights(batch, self.k)
        out = training_objective(log_weights, kl_weight, free_bits, self.free_bits_per_dim, self.bound,
                                 self.term_weights)
        loss = out.loss + self.model.regularizer()
        self._check_finite(loss, step, batch_idx)
        batch_size = out.elbo.shape[0]
        values = {"elbo": out.elbo, "rec": out.reconstruction_nll, "kl": out.kl, "bound": out.bound,
                  **out.terms, **log_weights.metrics}
        self.log_dict({"train/loss": loss, **{f"train/{name}": v.mean() for name, v in values.items()}},
                      batch_size=batch_size, prog_bar=False)
        self.log("train/kl_weight", kl_weight, batch_size=batch_size)
        for name, value in extra.items():
            self.log(f"train/{name}", float(value), batch_size=batch_size)
        if log_weights.num_units is not None:
            values["units"] = log_weights.num_units
        for name, value in values.items():
            self._train_sums[name] = self._train_sums.get(name, 0.0) + value.detach().double().sum()
        self._train_sums["count"] = self._train_sums.get("count", 0) + batch_size
        return loss

    def _check_finite(self, loss: torch.Tensor, step: int, batch_idx: int) -> None:
        """Fail on a NaN/inf loss. Flags accumulate on the device; the host looks every
        ``check_finite_every`` steps and at the last batch of each epoch (before validation)."""
        finite = torch.isfinite(loss.detach())
        self._all_finite = finite if self._all_finite is None else self._all_finite & finite
        last_batch = self.trainer is not None and batch_idx == self.trainer.num_training_batches - 1
        if (step % self.check_finite_every == 0 or last_batch) and not bool(self._all_finite):
            raise NonFiniteLossError(
                f"train/loss is {loss.item()} at step {step} (or within the {self.check_finite_every} steps "
                "before): lower optimizer.lr, set trainer.gradient_clip_val (e.g. 5.0), or check the data; "
                "no metrics were written")

    def on_train_epoch_end(self) -> None:
        """The epoch's ``train/…`` means over the examples of every rank (DDP: the ranks' sums, added),
        and what they counted: ``train/examples``, ``train/units`` (predicted tokens or characters)."""
        means = [*EVAL_MEANS[:4], *sorted(set(self._train_sums) - set(TRAIN_SUMS))]  # the family's terms too
        names = [*TRAIN_SUMS, *means[4:]]  # the same on every rank, in this order
        local = torch.stack([torch.as_tensor(self._train_sums.get(name, 0.0), dtype=torch.float64, device=self.device)
                             for name in names])
        sums = dict(zip(names, self.trainer.strategy.reduce(local, reduce_op="sum").tolist()))
        self._train_sums = {}
        count = sums.pop("count")
        if count:
            self.final_metrics.update({f"train/{name}": sums[name] / count for name in means})
            self.final_metrics["train/kl_weight"] = self.kl_weight_at(self.global_step)
            self.final_metrics["train/examples"] = count
            if sums["units"] > 0:
                self.final_metrics["train/units"] = sums["units"]

    # -- evaluation
    def _eval_step(self, batch: Any, batch_idx: int, stage: str) -> None:
        log_weights = self.model.log_weights(batch, self.k)  # the ELBO parts and the bound at the training k
        out = training_objective(log_weights, 1.0)
        units = log_weights.num_units if log_weights.num_units is not None else torch.zeros_like(out.elbo)
        # draws per decoder pass: a budget of predicted units (tokens) where the family counts them
        chunk = self.chunk_size if self.chunk_units is None or log_weights.num_units is None else \
            max(1, self.chunk_units // max(1, int(units.sum())))
        nll = importance_weighted_nll(self.model, batch, self.num_eval_samples[stage], chunk, log_weights.encoded)
        sums = self.eval_sums[stage]
        for name, value in (("elbo", out.elbo), ("rec", out.reconstruction_nll), ("kl", out.kl),
                            ("bound", out.bound), ("nll", nll), ("units", units),
                            ("count", torch.ones_like(out.elbo)), *out.terms.items(), *log_weights.metrics.items()):
            if name not in sums:  # a term or metric of the family: summed like the others (synced under DDP)
                sums[name] = SumMetric().to(self.device)
            sums[name].update(value.detach().double().sum())
        posterior = log_weights.encoded if log_weights.encoded is not None else self.model.encode(batch)
        if posterior is not None:
            self.posterior_example = posterior
            self.eval_posteriors[stage].update(posterior.pack())
        pairs = (self.model.text_pairs(batch) if self.use_text_metrics and (
            self.max_text_batches is None or batch_idx < self.max_text_batches) else None)
        if pairs is not None:
            gathered = self.text_outputs.setdefault(stage, ([], []))
            gathered[0].extend(pairs[0])
            gathered[1].extend(pairs[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_start(self) -> None:
        self.text_outputs.pop("val", None)
        self._prepare_evaluation()

    def on_test_epoch_start(self) -> None:
        self.text_outputs.pop("test", None)
        self._prepare_evaluation()

    def _prepare_evaluation(self) -> None:
        if self.trainer is not None:
            self.model.prepare_evaluation(self.trainer.datamodule)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _eval_epoch_end(self, stage: str) -> None:
        sums = {name: float(metric.compute()) for name, metric in self.eval_sums[stage].items()}
        for metric in self.eval_sums[stage].values():
            metric.reset()
        count = max(sums["count"], 1.0)
        extra = sorted(set(sums) - set(EVAL_SUMS))
        metrics = {name: sums[name] / count for name in (*EVAL_MEANS, *extra)}
        if sums["units"] > 0:  # the family counts predicted units (tokens, characters)
            metrics.update(ppl=perplexity(sums["nll"], sums["units"]), rec_ppl=perplexity(sums["rec"], sums["units"]))
        posteriors = self.eval_posteriors[stage]
        if posteriors.update_count:
            posterior = self.posterior_example.unpack(posteriors.compute())
            metrics["active_units"] = float(active_units(posterior.means()))
            metrics["mi"] = posterior.mutual_information(generator=generator_on(self.device, 0))
        posteriors.reset()
        if stage in self.text_outputs:
            hyps, refs = self._gather_text(*self.text_outputs[stage])
            self.text_outputs[stage] = (hyps, refs)
            metrics.update(self.model.text_metrics(hyps, refs))
        if self.trainer is not None:
            metrics.update(self.model.epoch_metrics(self.trainer.datamodule, stage))
        metrics["examples"] = sums["count"]  # what was evaluated: the whole split, on all ranks together
        if sums["units"] > 0:
            metrics["units"] = sums["units"]
        if not self.trainer.sanity_checking:
            self.final_metrics.update({f"{stage}/{k}": float(v) for k, v in metrics.items()})
        # every value is already over all ranks (synced sums, gathered posteriors and texts): the
        # ranks' mean of equal values leaves it unchanged, and Lightning knows it is synced
        self.log_dict({f"{stage}/{k}": float(v) for k, v in metrics.items()}, sync_dist=True)

    @staticmethod
    def _gather_text(hyps: list[str], refs: list[str]) -> tuple[list[str], list[str]]:
        """All ranks' decodings (in rank order) under DDP; the same lists otherwise."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return hyps, refs
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (hyps, refs))
        return [h for g in gathered for h in g[0]], [r for g in gathered for r in g[1]]

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Keep a host copy of ``lengths`` (packing sequences needs them on the CPU), so moving
        them back does not stall the device every step."""
        lengths_cpu = batch.get("lengths")  # every datamodule yields dict batches
        batch = super().transfer_batch_to_device(batch, device, dataloader_idx)
        if lengths_cpu is not None:
            batch["lengths_cpu"] = lengths_cpu
        return batch

    # -- optimisation and checkpoints
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.lr_scheduler_factory(optimizer=optimizer),
                                                         "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip here, not through the precision plugin: Lightning's mixed-precision plugin refuses a fused
        optimizer (``optimizer.fused``) even under bf16-mixed, where no gradient scaler exists and the
        gradients are already the true ones. Under 16-mixed the scaler must unscale first: Lightning's
        own path (which says to set ``optimizer.fused=false``)."""
        if not gradient_clip_val:
            return
        if str(self.trainer.precision).startswith("16"):
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        elif gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.config is not None:
            checkpoint["vae_lab_config"] = self.config
        checkpoint["vae_lab_rng"] = {"torch": torch.get_rng_state()}  # a resumed run draws on from here

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming: torch's random state as it was when the checkpoint was written (before the next
        epoch's data iterator draws its seed, as in the uninterrupted run), so the run draws on what
        the uninterrupted run would have."""
        state = checkpoint.get("vae_lab_rng")
        fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if state is not None and fitting:  # testing a checkpoint keeps the seed's draws
            torch.set_rng_state(state["torch"])
