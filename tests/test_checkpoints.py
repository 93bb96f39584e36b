"""Configs stored in checkpoints: targets that moved since a checkpoint was written still build."""
from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import OmegaConf

from vae_lab.checkpoints import config_from_checkpoint
from vae_lab.schedules import Linear


def test_a_checkpoint_naming_the_old_schedule_module_restores():
    saved = {"model": {"_target_": "vae_lab.models.cvae.TenseCVAE", "teacher_forcing": {
                 "_target_": "vae_lab.annealing.Linear", "steps": 10, "start": 1.0, "end": 0.0}},
             "dataset": {"_target_": "vae_lab.data.verb_tense.VerbTenseDataModule"}}
    cfg = config_from_checkpoint(OmegaConf.create({"dataset": {"path": None}}), {"vae_lab_config": saved})
    assert cfg.model.teacher_forcing._target_ == "vae_lab.schedules.Linear"
    schedule = instantiate(cfg.model.teacher_forcing)
    assert isinstance(schedule, Linear) and schedule(10) == 0.0
