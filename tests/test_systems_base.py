"""One systems base: every LightningModule of svblur derives from TrainingSystem and states
its kind; the base writes the same checkpoint record for all of them (the GAN family
included); an SR test's per-image rows hold exactly the metrics its torchmetrics log."""

from __future__ import annotations

import functools
import inspect

import lightning as L
import pytest
import torch

import svblur.systems as systems
from svblur.checkpoints import RECORD_KEY, SYSTEM_KINDS, checkpoint_kind
from svblur.metrics.metrics import PerImageMean
from svblur.metrics.sr import psnr_rgb, psnr_y, ssim_y
from svblur.models import RRDBSFT, RRDBNet, UNetDiscriminatorSN
from svblur.systems import GANSRTask, NonBlindSRTask, TrainingSystem

# what every system computes, written out independently of the classes
EXPECTED_KINDS = {
    "BlurSemanticsTask": "blur_semantics",
    "KernelEstimationTask": "kernel_estimation",
    "SVKRTask": "kernel_regression",
    "NonBlindSRTask": "non_blind_sr",
    "KernelCodeSRTask": "non_blind_sr",
    "BlindSRTask": "blind_sr",
    "KernelBlindSRTask": "blind_sr",
    "GANSRTask": "gan_sr",
    "PBaSRTask": "gan_sr",
    "DiffusionSRTask": "diffusion_sr",
}


def _lightning_modules() -> dict[str, type]:
    return {
        name: obj
        for name in systems.__all__
        if inspect.isclass(obj := getattr(systems, name)) and issubclass(obj, L.LightningModule)
    }


def test_every_system_derives_from_training_system_and_states_its_kind():
    modules = _lightning_modules()
    concrete = {name: cls for name, cls in modules.items() if name.endswith("Task")}
    assert set(concrete) == set(EXPECTED_KINDS)
    for name, cls in modules.items():
        assert issubclass(cls, TrainingSystem), f"{name} is not a TrainingSystem"
    for name, cls in concrete.items():
        assert cls.kind == EXPECTED_KINDS[name], name
        assert cls.kind in SYSTEM_KINDS
    assert TrainingSystem.kind is None


def _adam():
    return functools.partial(torch.optim.Adam, lr=1e-4)


def _gan() -> GANSRTask:
    return GANSRTask(
        net=RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=4),
        discriminator=UNetDiscriminatorSN(num_features=8),
        g_optimizer=_adam(),
        d_optimizer=_adam(),
    )


def test_gan_checkpoints_carry_the_base_record():
    """The GAN family used to write its own record, without skipped_steps."""
    system = _gan()
    system.skipped_steps = 3
    system.net_config = {"_target_": "svblur.models.RRDBNet", "num_features": 8}
    checkpoint: dict = {}
    system.on_save_checkpoint(checkpoint)
    assert checkpoint["skipped_steps"] == 3
    record = checkpoint[RECORD_KEY]
    assert record["system"] == "GANSRTask"
    assert record["kind"] == "gan_sr"
    assert record["net"] == system.net_config
    assert record["average_of"] == ["net."]
    assert checkpoint_kind(checkpoint) == "gan_sr"
    restored = _gan()
    restored.on_load_checkpoint(checkpoint)
    assert restored.skipped_steps == 3


def test_gan_metrics_are_logged_by_the_base_as_region_keys():
    system = _gan()
    assert set(system.metrics) == {"val", "test"}
    logged: dict[str, torch.Tensor] = {}
    system.log = lambda key, value, **kwargs: logged.__setitem__(key, value)  # type: ignore[method-assign]
    hr = torch.rand(2, 3, 64, 64)  # VIF needs 41 pixels after the crop
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., :32] = 1
    system.metrics["val"]["sr"].update(sr, hr, mask)
    system.on_validation_epoch_end()
    assert {"val/sr/all/psnr_y", "val/sr/blurred/psnr_y", "val/sr/sharp/psnr_y"} <= set(logged)
    expected = psnr_y(sr, hr, 4, True).mean()
    assert float(logged["val/sr/all/psnr_y"]) == pytest.approx(float(expected), abs=0.05)
    assert system.in_progress_bar("sr/all/psnr_y")


class _Trainer:
    """What SuperResolutionTask's test loop reads from its trainer."""

    test_dataloaders = None
    datamodule = None


def test_sr_rows_hold_the_metrics_the_torchmetrics_measure():
    """One definition of the metrics: every per-image metric (here also the RGB ones)
    appears in the per-image rows, each equal to the reference function."""
    net = RRDBSFT(num_features=8, num_blocks=1, growth_channels=4, prior_channels=8)
    system = NonBlindSRTask(net, optimizer=_adam(), rgb_metrics=True, log_images=0)
    per_image = {n for n, m in system.metrics["test"].items() if isinstance(m, PerImageMean)}
    assert per_image == {"sr/psnr_y", "sr/ssim_y", "sr/psnr_rgb", "sr/ssim_rgb"}
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 32, 32, generator=gen)
    outputs = {"sr": (hr + 0.05 * torch.randn(hr.shape, generator=gen)).clamp(0, 1)}
    system._record_rows("test", [0, 1], outputs, {"hr": hr, "lr": hr[..., ::4, ::4]})
    rows = system._test_rows
    assert [r["index"] for r in rows] == [0, 1]
    assert set(rows[0]) == {"group", "index"} | per_image
    for i, row in enumerate(rows):
        sr, ref = outputs["sr"][i : i + 1], hr[i : i + 1]
        assert row["sr/psnr_y"] == pytest.approx(float(psnr_y(sr, ref, 4, True)), rel=1e-6)
        assert row["sr/ssim_y"] == pytest.approx(float(ssim_y(sr, ref, 4, True)), rel=1e-6)
        assert row["sr/psnr_rgb"] == pytest.approx(float(psnr_rgb(sr, ref, 4, True)), rel=1e-6)


def test_a_system_without_metrics_says_so():
    class NoMetrics(TrainingSystem):
        kind = "blur_semantics"

    with pytest.raises(NotImplementedError, match="NoMetrics must define build_metrics"):
        NoMetrics().init_metrics()
