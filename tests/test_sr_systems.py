"""SR stages 2 and 3 through the real Hydra configs; the frozen estimator of stage 3."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from skimage.metrics import peak_signal_noise_ratio
from torch.utils.data import DataLoader, DistributedSampler

from svblur.cli.train import train
from svblur.experiments.training import build, evaluate, metric_table
from svblur.systems.sr import sample_positions

from .conftest import TINY_BLIND_NET
from .test_sr_metrics import reference_y

# Space-invariant samples only: they render in milliseconds (the layered space-variant
# renderer takes seconds per sample), and the SR stages do not depend on the blur layout.
FAST_DATA = ["data.space_invariant_fraction=1.0", "data.augment=false"]
TINY_SR = FAST_DATA + [
    "model.net.num_features=8",
    "model.net.num_blocks=1",
    "model.net.growth_channels=4",
    "model.net.prior_channels=8",
    "model.net.gia_groups=2",
    "model.net.window_size=[8,8]",
    "model.log_images=2",
]
TINY_BLIND = FAST_DATA + TINY_BLIND_NET + ["model.log_images=2"]


def test_stage2_trains_and_eval_writes_tables(make_cfg, tmp_path):
    cfg = make_cfg(
        "train",
        ["experiment=synthetic_stage2", "trainer.max_epochs=1", "callbacks=model_checkpoint"]
        + TINY_SR,
    )
    metrics = train(cfg)
    assert {"train/loss", "val/sr/psnr_y", "test/sr/psnr_y", "test/sr/ssim_y"} <= set(metrics)
    out = Path(cfg.paths.output_dir)
    assert list(out.glob("csv/version_*/images/val_sr_*.png")), "SR panel not logged"
    ckpt = out / "checkpoints" / "last.ckpt"
    eval_cfg = make_cfg("eval", ["experiment=synthetic_stage2", f"ckpt_path={ckpt}"] + TINY_SR)
    with open_dict(eval_cfg):
        eval_cfg.paths.output_dir = str(tmp_path / "eval")
    result = evaluate(eval_cfg)
    with open(tmp_path / "eval" / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # data.test_size, each image once
    assert sorted(int(r["index"]) for r in rows) == [0, 1, 2, 3]
    mean = sum(float(r["sr/psnr_y"]) for r in rows) / len(rows)
    assert mean == pytest.approx(result["test/sr/psnr_y"], rel=1e-4)
    # One epoch: the best checkpoint train() tested is the last one evaluated here.
    assert result["test/sr/psnr_y"] == pytest.approx(metrics["test/sr/psnr_y"], rel=1e-6)
    # Each row against scikit-image on the checkpoint's SR image (8 bits, Y, crop 4).
    model = instantiate(eval_cfg.model)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    datamodule = instantiate(eval_cfg.data)
    datamodule.setup("test")
    for row in rows:
        item = datamodule.datasets["test"][int(row["index"])]
        with torch.no_grad():
            sr = model.eval().predict_maps({k: v[None] for k, v in item.items()})["sr"][0]
        expected = peak_signal_noise_ratio(
            reference_y(item["hr"], 4), reference_y(sr.clamp(0, 1), 4), data_range=255
        )
        assert float(row["sr/psnr_y"]) == pytest.approx(expected, abs=1e-4)
    table = (tmp_path / "eval" / "metrics.md").read_text()
    assert "sr/psnr_y" in table and "| test |" in table
    assert (tmp_path / "eval" / "metrics.csv").is_file()


def test_metric_table_has_groups_and_mean():
    metrics = {
        "test/Group1/sr/psnr_y": 30.0,
        "test/Group2/sr/psnr_y": 32.0,
        "test/sr/psnr_y": 31.0,
        "test/loss": 0.1,
        "test/Group1/loss": 0.1,
    }
    rows = metric_table(metrics, ["Group1", "Group2"])
    assert [r["group"] for r in rows] == ["Group1", "Group2", "mean"]
    assert [r["sr/psnr_y"] for r in rows] == [30.0, 32.0, 31.0]
    assert all("loss" not in key for r in rows for key in r)


def test_padding_duplicates_of_a_distributed_sampler_are_recognised():
    data = list(range(5))
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=False)
        positions = sample_positions(DataLoader(data, sampler=sampler, batch_size=2))
        assert len(positions) == 3  # padded to 6 = 2 x 3
        seen += [p for p in positions if p is not None]
    assert sorted(seen) == data  # every image exactly once over the ranks
    assert sample_positions(DataLoader(data, batch_size=2)) == data


def _stage_checkpoints(cfg, tmp_path: Path) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """Stage-1 and stage-2 Lightning-style checkpoints of the tiny networks."""
    torch.manual_seed(3)
    estimator = instantiate(cfg.model.net.estimator)
    for module in estimator.modules():  # BN statistics that training would visibly move
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    sr = instantiate(cfg.model.net.sr)
    paths = tmp_path / "stage1.ckpt", tmp_path / "stage2.ckpt"
    for path, net in zip(paths, (estimator, sr)):
        torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)
    state = {k: v.clone() for k, v in estimator.state_dict().items()}
    return paths[0], paths[1], state


def test_stage3_keeps_the_estimator_frozen(make_cfg, tmp_path):
    base = make_cfg("train", ["experiment=synthetic_stage3"] + TINY_BLIND)
    s1, s2, frozen_state = _stage_checkpoints(base, tmp_path)
    cfg = make_cfg(
        "train",
        ["experiment=synthetic_stage3", f"model.estimator_ckpt={s1}", f"model.sr_ckpt={s2}"]
        + ["trainer.max_epochs=1", "callbacks=none", "+trainer.limit_train_batches=2"]
        + ["+trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"]
        + TINY_BLIND,
    )
    datamodule, model, trainer = build(cfg)

    modes: list[bool] = []

    def record(*_args, **_kwargs):
        modes.append(any(m.training for m in model.net.estimator.modules()))

    model.on_train_batch_start = record  # type: ignore[method-assign]
    trainer.fit(model, datamodule=datamodule)

    assert len(modes) == 2 and not any(modes), "estimator left eval mode during training"
    assert not any(p.requires_grad for p in model.net.estimator.parameters())
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in model.net.estimator.parameters()}
    assert optimized == {id(p) for p in model.net.sr.parameters()}
    after = model.net.estimator.state_dict()
    for key, value in frozen_state.items():  # weights and BN buffers, num_batches_tracked too
        assert torch.equal(after[key].cpu(), value), key
    sr_init = torch.load(s2, weights_only=True)["state_dict"]
    assert any(
        not torch.equal(v, sr_init[f"net.{k}"]) for k, v in model.net.sr.state_dict().items()
    ), "the SR network was not fine-tuned"

    # validation outputs are identical across repeated runs
    first = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    second = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    assert first == second
    assert {"val/blur/psnr", "val/seg/miou", "val/sr/psnr_y"} <= set(first)
    batch = next(iter(datamodule.val_dataloader()))
    model.train()  # what Lightning does between epochs
    with torch.no_grad():
        out1 = model.net.estimator(batch["lr"])
        out2 = model.net.estimator(batch["lr"])
    torch.testing.assert_close(out1["blur"], out2["blur"], rtol=0, atol=0)
    final = model.net.estimator.state_dict()
    for key, value in frozen_state.items():
        assert torch.equal(final[key].cpu(), value), key


def test_stage3_without_checkpoints_names_the_missing_key(make_cfg):
    cfg = make_cfg("train", ["experiment=synthetic_stage3", "debug=fdr"] + TINY_BLIND)
    with pytest.raises(ValueError, match="model.estimator_ckpt"):
        train(cfg)


@pytest.mark.parametrize("name", ["synthetic_stage1", "synthetic_stage2", "synthetic_stage3"])
def test_synthetic_experiments_compose(make_cfg, name):
    cfg = make_cfg("train", [f"experiment={name}"])
    assert cfg.task_name == name
    target = {"synthetic_stage1": "BlurSemanticsTask", "synthetic_stage2": "NonBlindSRTask"}
    assert cfg.model._target_.endswith(target.get(name, "BlindSRTask"))


class _MeanAbs(torch.nn.Module):
    """A stand-in for piq's LPIPS (whose weights are not on this machine): per-image mean
    absolute difference, with one parameter so that device moves and state dicts show."""

    def __init__(self) -> None:
        super().__init__()
        self.unit = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().mean(dim=(1, 2, 3)) * self.unit


def test_learned_perceptual_metric_is_logged_from_local_weights(make_cfg, monkeypatch):
    """model.perceptual_metrics=[lpips] logs sr/lpips (crop scale, mean over images) from
    networks built by local_perceptual_metrics; they stay out of the checkpoint."""
    import svblur.systems.sr as sr_systems
    from svblur.metrics import SRPerceptual

    asked = {}

    def local_only(weights_dir, names):
        asked.update(dir=weights_dir, names=names)
        return {name: _MeanAbs() for name in names}

    monkeypatch.setattr(sr_systems, "local_perceptual_metrics", local_only)
    cfg = make_cfg(
        "train",
        [
            "experiment=synthetic_stage2",
            "trainer.max_epochs=1",
            "callbacks=none",
            "+model.perceptual_metrics=[lpips]",
            "+model.perceptual_weights_dir=/weights",
        ]
        + TINY_SR,
    )
    metrics = train(cfg)
    assert asked == {"dir": "/weights", "names": ["lpips"]}
    assert 0 < metrics["test/sr/lpips"] < 1 and 0 < metrics["val/sr/lpips"] < 1
    model = instantiate(cfg.model)
    assert not any("lpips" in key for key in model.state_dict())
    metric = SRPerceptual(_MeanAbs(), crop_border=2)
    sr, hr = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    sr[0, :, 2:6, 2:6] = 0.5  # inside the crop: mean |diff| 0.5 over the 4x4 centre
    sr[1, :, :2] = 1.0  # only in the cropped border: 0
    metric.update(sr, hr)
    assert float(metric.compute()) == pytest.approx(0.25)
