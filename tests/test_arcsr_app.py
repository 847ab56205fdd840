"""ArcSR through the Hydra apps: the built-in data with motion blur, GoPro and REDS trees,
the optional kernel loss, and svblur-predict with an ArcSR checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svblur.cli.predict import predict
from svblur.experiments.training import train
from svblur.systems.sr import kernels_on_grid

from .helpers import epoch_losses
from .test_motion_data import make_gopro, make_reds
from .test_predict import _predict_cfg

# A narrow ArcSR: every part present, tiny widths.
TINY_ARCSR = [
    "model.net.num_features=8",
    "model.net.num_kg_blocks=1",
    "model.net.kg_convs_per_block=2",
    "model.net.unet_channels=[8,8]",
    "model.net.dm_blocks_per_level=1",
    "model.net.dm_convs_per_block=2",
    "model.log_images=0",
]


def test_synthetic_arcsr_trains_and_its_loss_falls(make_cfg):
    cfg = make_cfg(
        "train",
        [
            "experiment=synthetic_arcsr",
            *TINY_ARCSR,
            "trainer.max_epochs=4",
            "data.augment=false",
            "callbacks=none",
            "test=false",
        ],
    )
    assert cfg.model.net._target_ == "svblur.models.ArcSR"
    assert cfg.degradation.blur._target_ == "svblur.degradation.MotionFieldBlur"
    train(cfg)
    losses = epoch_losses(Path(cfg.paths.output_dir))
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses


def test_kernel_loss_is_optional_and_measured_against_the_field(make_cfg):
    overrides = ["experiment=synthetic_arcsr", *TINY_ARCSR, "debug=fdr"]
    metrics = train(make_cfg("train", [*overrides, "degradation.blur.kernel_size=5"]))
    assert "train/loss/kernels" not in metrics  # off by default, as the paper
    assert 0.0 <= metrics["test/kernels/l1"] <= 2.0
    metrics = train(
        make_cfg("train", [*overrides, "degradation.blur.kernel_size=5", "model.kernel_weight=1"])
    )
    assert 0.0 < metrics["train/loss/kernels"] <= 2.0
    with pytest.raises(ValueError, match="kernel size"):
        train(make_cfg("train", [*overrides, "model.kernel_weight=1"]))  # 21-tap data


def test_ground_truth_field_on_the_lr_grid_averages_blocks():
    field = torch.rand(2, 9, 8, 12)
    field = field / field.sum(1, keepdim=True)
    grid = kernels_on_grid(field, (2, 3))
    torch.testing.assert_close(grid[:, :, 1, 2], field[:, :, 4:8, 8:12].mean(dim=(-2, -1)))
    torch.testing.assert_close(grid.sum(1), torch.ones(2, 2, 3))


@pytest.mark.parametrize("name", ["gopro", "reds"])
def test_paper_experiments_run_on_fake_trees(make_cfg, tmp_path, name):
    root = (make_gopro if name == "gopro" else make_reds)(tmp_path / name)
    cfg = make_cfg(
        "train",
        [
            f"experiment={name}_arcsr",
            f"data.root={root}",
            "data.crop_size=16",
            "data.batch_size=2",
            "data.num_workers=0",
            *TINY_ARCSR,
            "debug=fdr",
        ],
        tiny=False,
    )
    assert list(cfg.model.scheduler.milestones) == [20000, 40000, 80000, 200000]
    assert cfg.trainer.max_steps == 400000 and cfg.model.optimizer.lr == 1e-4
    metrics = train(cfg)
    for group in ("noise0", "noise10"):
        assert math.isfinite(metrics[f"test/{group}/sr/psnr_y"]), sorted(metrics)
    assert metrics["test/sr/psnr_y"] == pytest.approx(
        (metrics["test/noise0/sr/psnr_y"] + metrics["test/noise10/sr/psnr_y"]) / 2, rel=1e-5
    )


def test_predict_with_an_arcsr_checkpoint_writes_sr_and_kernels(make_cfg, tmp_path):
    cfg = make_cfg(
        "train",
        ["experiment=synthetic_arcsr", *TINY_ARCSR, "++trainer.max_steps=1", "test=false"],
    )
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (18, 22, 3), dtype=np.uint8)).save(photos / "p.png")
    out = tmp_path / "out"
    summary = predict(_predict_cfg(tmp_path, [f"ckpt={ckpt}", f"input={photos}", f"output={out}"]))
    assert summary["kind"] == "blind_sr" and summary["processed"] == ["p.png"]
    assert sorted(p.name for p in out.glob("p_*.png")) == ["p_kernels.png", "p_sr.png"]
    with Image.open(out / "p_sr.png") as sr, Image.open(out / "p_kernels.png") as picture:
        assert sr.size == picture.size == (4 * 22, 4 * 18)
