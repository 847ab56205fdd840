"""PBaSR through the Hydra app: two branches train on the built-in data, fuse, resume
exactly after an interruption, and export a merged generator that loads into RRDBNet."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from svblur.checkpoints import load_network
from svblur.experiments.training import train
from svblur.models import RRDBNet

TINY_PBASR = [
    "experiment=synthetic_pbasr",
    "data.general.hr_size=[32,48]",
    "data.general.train_size=8",
    "data.general.val_size=2",
    "data.general.test_size=2",
    "data.general.batch_size=2",
    "model.net.num_blocks=1",
    "model.net.num_features=8",
    "model.net.growth_channels=4",
    "model.discriminator.num_features=8",
    "model.blur_discriminator.num_features=8",
    "model.eval_metrics=[psnr_y,ssim_y]",
    "callbacks.cross_branch_fusion.every_n_steps=2",
    "callbacks.rich_progress_bar=null",
    "trainer.num_sanity_val_steps=0",
]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_synthetic_pbasr_trains_fuses_and_exports_the_merged_generator(make_cfg):
    cfg = make_cfg("train", [*TINY_PBASR, "trainer.max_epochs=1"], tiny=False)
    metrics = train(cfg)
    for region in ("all", "blurred", "sharp"):
        assert math.isfinite(metrics[f"test/sr/{region}/psnr_y"]), sorted(metrics)
    # 4 batches, fusion every 2: lambda in (lambda0, 1]
    assert 0.99 < metrics["train/fusion_lambda"] <= 1.0
    out = Path(cfg.paths.output_dir)
    last = _state(out / "checkpoints" / "last.ckpt")["state_dict"]
    general = {k[len("general.") :]: v for k, v in last.items() if k.startswith("general.")}
    blur = {k[len("blur.") :]: v for k, v in last.items() if k.startswith("blur.")}
    assert general.keys() == blur.keys() and any(not torch.equal(general[k], blur[k]) for k in blur)
    exported = _state(out / "pbasr_generator.pth")
    plain = RRDBNet(num_features=8, num_blocks=1, growth_channels=4)
    plain.load_state_dict(exported, strict=True)
    for key, value in exported.items():
        torch.testing.assert_close(value, (general[key] + blur[key]) / 2)
    # svblur-predict's loader rebuilds the merged generator from the checkpoint itself
    loaded = load_network(out / "checkpoints" / "last.ckpt")
    assert isinstance(loaded.net, RRDBNet) and loaded.kind == "gan_sr"
    for key, value in loaded.net.state_dict().items():
        torch.testing.assert_close(value, exported[key])


class CrashAfter(L.Callback):
    """Raise before the next training batch once ``global_step`` reached ``step`` (a crash
    after the checkpoints of that step, which Lightning runs after other callbacks)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated crash")


def test_resume_after_a_crash_continues_both_branches_exactly(make_cfg, tmp_path):
    """A crash after 2 of the first epoch's 4 batches (last.ckpt written every 8 optimizer
    steps, i.e. every 2 batches), resumed from last.ckpt: after two epochs both generators
    and both discriminators equal those of an uninterrupted run."""
    base = [
        *TINY_PBASR,
        "test=false",
        "trainer.max_epochs=2",
        "callbacks.early_stopping=null",
        "callbacks.step_checkpoint.every_n_train_steps=8",
    ]
    whole = make_cfg("train", base, tiny=False)
    train(whole)
    crash = f"+callbacks.crash={{_target_:{__name__}.CrashAfter,step:8}}"
    stopped = make_cfg("train", [*base, crash], tiny=False)
    with open_dict(stopped):
        stopped.paths.output_dir = str(tmp_path / "interrupted")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(stopped)
    interrupted = Path(stopped.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert _state(interrupted)["global_step"] == 8
    resumed = make_cfg("train", [*base, f"ckpt_path={interrupted}"], tiny=False)
    with open_dict(resumed):
        resumed.paths.output_dir = str(tmp_path / "resumed")
    train(resumed)
    expected = _state(Path(whole.paths.output_dir) / "checkpoints" / "last.ckpt")
    got = _state(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert got["global_step"] == expected["global_step"] == 32
    prefixes = ("general.", "blur.", "discriminator.", "blur_discriminator.")
    keys = [k for k in expected["state_dict"] if k.startswith(prefixes)]
    assert {k.split(".")[0] for k in keys} == {p[:-1] for p in prefixes}
    for key in keys:
        torch.testing.assert_close(got["state_dict"][key], expected["state_dict"][key])
    for a, b in zip(got["optimizer_states"], expected["optimizer_states"], strict=True):
        assert a["state"].keys() == b["state"].keys()


def test_one_branch_baseline_trains_on_mixed_data(make_cfg):
    tiny = [o for o in TINY_PBASR if not o.startswith("callbacks.")]
    cfg = make_cfg(
        "train",
        [
            *tiny,
            "model=gan_sr",
            "model.net.num_blocks=1",
            "model.net.num_features=8",
            "model.net.growth_channels=4",
            "model.discriminator.num_features=8",
            "model.perceptual=null",
            "~callbacks.cross_branch_fusion",
            "~model.blur_discriminator",
            "debug=fdr",
        ],
        tiny=False,
    )
    metrics = train(cfg)
    assert math.isfinite(metrics["test/sr/blurred/psnr_y"])


def test_pbasr_refuses_single_batches(make_cfg):
    tiny = [o for o in TINY_PBASR if not o.startswith(("callbacks.", "data."))]
    cfg = make_cfg("train", [*tiny, "data=synthetic", "debug=fdr"], tiny=False)
    with pytest.raises(ValueError, match="general"):
        train(cfg)
