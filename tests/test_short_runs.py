"""Runs that end before any validation has run, with the default callbacks.

Early stopping and best-checkpoint selection monitor ``val/loss``; a run shorter than one
epoch, ``limit_val_batches=0`` or ``check_val_every_n_epoch`` beyond ``max_epochs`` never
logs it. Each such run must finish, warn once, and leave a ``last.ckpt`` that
``svblur-eval`` loads.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from svblur.cli.eval import evaluate
from svblur.cli.train import train

from .test_scale import run_cli

# TINY trains on 8 images in batches of 2: 4 steps per epoch.
NO_VALIDATION = {
    "max_steps_shorter_than_an_epoch": ["++trainer.max_steps=2", "trainer.max_epochs=1"],
    "limit_val_batches_0": ["trainer.limit_val_batches=0", "trainer.max_epochs=1"],
    "validation_after_max_epochs": ["trainer.check_val_every_n_epoch=3", "trainer.max_epochs=1"],
}


def _evaluate_last(make_cfg, checkpoints: Path, out: Path) -> dict[str, float]:
    cfg = make_cfg("eval", [f"ckpt_path={checkpoints / 'last.ckpt'}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    metrics = evaluate(cfg)
    assert math.isfinite(metrics["test/blur/psnr"]) and math.isfinite(metrics["test/seg/miou"])
    return metrics


@pytest.mark.parametrize("setting", sorted(NO_VALIDATION))
def test_default_callbacks_survive_a_run_without_validation(make_cfg, tmp_path, setting):
    cfg = make_cfg("train", ["callbacks=default", *NO_VALIDATION[setting]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(cfg)
    assert not any(key.startswith("val/") for key in metrics), "validation was expected not to run"
    stop_warnings = [w for w in caught if "EarlyStopping(monitor='val/loss')" in str(w.message)]
    # With validation planned for later epochs, Lightning checks only after a validation,
    # so that run never reaches the check; the others reach it at every epoch end.
    expected = 0 if setting == "validation_after_max_epochs" else 1
    assert len(stop_warnings) == expected, [str(w.message) for w in caught]

    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    # No validation, so no best checkpoint: only last.ckpt, at the step the run stopped.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]
    state = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == (2 if "max_steps" in setting else 4)
    _evaluate_last(make_cfg, checkpoints, tmp_path / "eval")


def test_early_stopping_still_rejects_a_misspelt_metric_after_validation(make_cfg):
    cfg = make_cfg(
        "train",
        ["callbacks=default", "trainer.max_epochs=1", "callbacks.early_stopping.monitor=val/los"],
    )
    with pytest.raises(RuntimeError, match="val/los"):
        train(cfg)


@pytest.mark.parametrize("setting", sorted(NO_VALIDATION))
def test_ddp_cpu_run_without_validation_leaves_a_usable_last_checkpoint(
    make_cfg, tmp_path, setting
):
    # 2 ranks x batch 2 over 8 images: 2 steps per epoch, so 1 step is shorter than one.
    overrides = [o.replace("max_steps=2", "max_steps=1") for o in NO_VALIDATION[setting]]
    result = run_cli(["trainer=ddp_cpu", "logger=wandb", "test=false", *overrides], tmp_path)
    assert "Early stopping conditioned on metric" not in result.stderr
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]
    state = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == (1 if "max_steps" in setting else 2)
    _evaluate_last(make_cfg, checkpoints, tmp_path / "eval")
