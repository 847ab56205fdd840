"""Shared fixtures: Hydra configs composed from the packaged configs (svblur/conf), on CPU with tiny limits."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from svblur.conf import config_dir

CONFIG_DIR = config_dir()

# Tiny settings shared by every app test: small images, few samples, no workers.
TINY = [
    "data.hr_size=[64,80]",
    "data.train_size=8",
    "data.val_size=4",
    "data.test_size=4",
    "data.batch_size=2",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "extras.print_config=false",
    "trainer.log_every_n_steps=1",
]

# A minimal blind-SR network (model=blind_sr): RRDB-SFT and CMOS estimator at toy size.
TINY_BLIND_NET = [
    "model.net.sr.num_features=8",
    "model.net.sr.num_blocks=1",
    "model.net.sr.growth_channels=4",
    "model.net.sr.prior_channels=8",
    "model.net.sr.gia_groups=2",
    "model.net.sr.window_size=[8,8]",
    "model.net.estimator.window_size=[4,5]",
    # channels-last kernels take seconds to warm up on CPU; irrelevant at this size
    "model.net.estimator.channels_last=false",
]


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # The app tests use tiny images: one intra-op thread is as fast, and it avoids
    # oversubscribing small CI machines when several processes run (DDP, workers).
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    os.environ.pop("WANDB_API_KEY", None)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``train.yaml``/``eval.yaml`` with overrides, outputs under ``tmp_path``."""

    def _make(
        config_name: str = "train", overrides: list[str] | None = None, tiny: bool = True
    ) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            cfg = compose(
                config_name=config_name,
                overrides=(TINY if tiny else TINY[-4:]) + list(overrides or []),
                return_hydra_config=True,
            )
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                cfg.paths.output_dir = str(tmp_path / "out")
                cfg.paths.log_dir = str(tmp_path / "logs")
                del cfg.hydra
        return cfg

    yield _make
    GlobalHydra.instance().clear()
