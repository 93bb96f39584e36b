"""A trained checkpoint, restored outside a Hydra run for the experiment scripts: the checkpoint's own
experiment (vae_lab/checkpoint_config.py), its model in eval mode and its data set up, and the run folder the
checkpoint belongs to (where the scripts write their JSON)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from vae_lab.train import restore, with_checkpoint

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def restored_model(checkpoint: Path):
    """``(model, datamodule)`` of ``checkpoint``: the model in eval mode, the data set up for fitting."""
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="train", overrides=["mode=test", f"ckpt={checkpoint}", "logger=none",
                                                      f"paths.output_dir={tempfile.mkdtemp()}"])
    cfg, restored = with_checkpoint(cfg)  # the checkpoint's own experiment
    module, datamodule = restore(cfg, restored)
    datamodule.setup("fit")
    return module.model.eval(), datamodule


def run_folder(checkpoint: Path) -> Path:
    """The run folder of ``<run>/checkpoints/<name>.ckpt`` (or the folder holding a loose checkpoint)."""
    folder = checkpoint.resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder
