"""The Hydra training and evaluation apps, composed from the real configs."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from omegaconf import open_dict

from svblur.cli.eval import evaluate
from svblur.cli.train import train

from .conftest import CONFIG_DIR


def test_fast_dev_run_of_train_yaml(make_cfg):
    cfg = make_cfg("train", ["debug=fdr"])
    metrics = train(cfg)
    assert {"train/loss", "test/blur/psnr", "test/seg/miou"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())


def test_short_training_logs_metrics_checkpoint_and_images_then_eval(make_cfg, tmp_path):
    cfg = make_cfg("train", ["trainer.max_epochs=2", "callbacks=default"])
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    ckpt = out / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    with open(next(out.glob("csv/version_*/metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    for col in ("train/loss_step", "val/blur/psnr", "val/blur/ssim", "val/seg/miou", "lr-Adam"):
        assert col in rows[0], col
    assert sum(1 for r in rows if r["val/blur/psnr"]) == 2
    images = list(out.glob("csv/version_*/images/val_predictions_*.png"))
    assert images, "validation prediction panel was not written"

    # train tested its best checkpoint; evaluating that file must reproduce the numbers.
    (best,) = list((out / "checkpoints").glob("epoch_*.ckpt"))
    eval_cfg = make_cfg("eval", [f"ckpt_path={best}"])
    with open_dict(eval_cfg):
        eval_cfg.paths.output_dir = str(tmp_path / "eval_out")
    result = evaluate(eval_cfg)
    for key in ("test/blur/psnr", "test/blur/ssim", "test/seg/miou"):
        assert result[key] == pytest.approx(metrics[key], rel=1e-5), key


def test_eval_requires_an_existing_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg("eval", [f"ckpt_path={tmp_path / 'missing.ckpt'}"])
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        evaluate(cfg)


def test_wandb_offline_run_writes_its_folder(make_cfg):
    cfg = make_cfg(
        "train", ["logger=wandb", "trainer.max_epochs=1", "callbacks=none", "test=false"]
    )
    train(cfg)
    runs = list(Path(cfg.paths.output_dir).glob("wandb/offline-run-*"))
    assert len(runs) == 1
    files = {p.name for p in runs[0].rglob("*")}
    assert any(name.endswith(".wandb") for name in files)
    media = list(runs[0].rglob("media/images/**/*.png"))
    assert media, "prediction panel not logged to W&B"


@pytest.mark.parametrize(
    ("override", "name"),
    [("model=no_such_model", "no_such_model"), ("data=no_such_data", "no_such_data")],
)
def test_unknown_config_names_are_reported(override, name):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        with pytest.raises(MissingConfigException, match=name):
            compose(config_name="train", overrides=[override])
    GlobalHydra.instance().clear()


def test_cli_reports_unknown_key(tmp_path):
    exe = Path(sys.executable).with_name("svblur-train")
    result = subprocess.run(
        [str(exe), "data.no_such_field=3", f"paths.log_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "no_such_field" in result.stderr
