"""``svblur-train data=nyuv2_bsr`` and ``svblur-eval`` with five test groups, on a tiny tree."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from svblur.cli.eval import evaluate
from svblur.cli.train import train
from svblur.data.bsr import BSRDataError

from .conftest import CONFIG_DIR
from .test_bsr_readers import make_bsr_tree

GROUPS = [f"Group{g}" for g in range(1, 6)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bsr_app") / "NYUv2-BSR"
    make_bsr_tree(root, "nyuv2", n_train=5, n_test=2, hr=(64, 80))
    return root


def _cfg(name: str, root: Path, out: Path, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(
            config_name=name,
            overrides=[
                "data=nyuv2_bsr",
                f"data.root={root}",
                "data.crop_size=null",
                "data.batch_size=2",
                "data.eval_batch_size=2",
                "data.num_workers=0",
                "data.pin_memory=false",
                "data.val_fraction=0.4",
                "trainer.accelerator=cpu",
                "trainer.devices=1",
                "extras.print_config=false",
                *overrides,
            ],
            return_hydra_config=True,
        )
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
            cfg.paths.log_dir = str(out / "logs")
            del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


def test_fast_dev_run_reports_five_groups_and_mean(tree, tmp_path) -> None:
    metrics = train(_cfg("train", tree, tmp_path / "fdr", ["debug=fdr"]))
    for name in ("blur/psnr", "blur/ssim", "seg/miou"):
        assert f"test/{name}" in metrics
        values = [metrics[f"test/{g}/{name}"] for g in GROUPS]
        assert metrics[f"test/{name}"] == pytest.approx(sum(values) / 5, rel=1e-5)


def test_train_then_eval_checkpoint(tree, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = _cfg(
        "train",
        tree,
        out,
        [
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=1",
            "+trainer.limit_val_batches=1",
            "test=false",
        ],
    )
    train(cfg)
    ckpt = out / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    result = evaluate(_cfg("eval", tree, tmp_path / "eval", [f"ckpt_path={ckpt}"]))
    for name in ("blur/psnr", "blur/ssim", "seg/miou"):  # five groups and their mean
        values = [result[f"test/{g}/{name}"] for g in GROUPS]
        assert result[f"test/{name}"] == pytest.approx(sum(values) / 5, rel=1e-5)


def test_broken_tree_fails_before_training(tree, tmp_path) -> None:
    broken = tmp_path / "broken"
    make_bsr_tree(broken, "nyuv2", n_train=2, n_test=1, hr=(64, 80))
    (broken / "val/Group3/LRx4/0000.png").unlink()
    with pytest.raises(BSRDataError, match=r"unequal image counts in split Group3"):
        train(_cfg("train", broken, tmp_path / "b", ["debug=fdr"]))
