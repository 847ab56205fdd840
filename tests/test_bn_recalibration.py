"""BatchNormRecalibration: statistics equal to torch's update_bn over the same batches, the
DDP reduction equals the statistics of the pooled batches, training is untouched, and
checkpoints carry the recomputed statistics."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from svblur.systems import BatchNormRecalibration
from svblur.systems.callbacks import (
    BN_RECALIBRATED_KEY,
    recompute_batch_norm_statistics,
    reduce_batch_norm_statistics,
    training_batch_norms,
)


def _batches(n: int, seed: int = 0, shift: float = 3.0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"lr": torch.randn(4, 3, 6, 6, generator=g) * 2 + shift} for _ in range(n)]


class ToySystem(L.LightningModule):
    """Conv-BN-ReLU-conv with the BatchNorm momentum of the released HRNet (0.01)."""

    def __init__(self, momentum: float = 0.01, dropout: float = 0.2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8, momentum=momentum),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(8, 3, 3, padding=1),
        )
        self.val_losses: list[float] = []

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.net(lr)

    def calibration_forward(self, batch: dict[str, torch.Tensor]) -> None:
        self.net(batch["lr"])

    def training_step(self, batch, batch_idx):
        return (self(batch["lr"]) - 1.0).abs().mean()

    def validation_step(self, batch, batch_idx):
        self.val_losses.append(float((self(batch["lr"]) - 1.0).abs().mean()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _loader(batches):
    return DataLoader(batches, batch_size=None)


def _trainer(tmp_path: Path, callbacks, steps: int = 6, **kwargs) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path,
        max_steps=steps,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        **kwargs,
    )


def test_recomputed_statistics_equal_torch_update_bn():
    batches = _batches(5)
    ours, reference = ToySystem().train(), ToySystem().train()
    norms = training_batch_norms(ours)
    assert len(norms) == 1
    with torch.no_grad():
        recompute_batch_norm_statistics(norms, [lambda b=b: ours.net(b["lr"]) for b in batches])
    update_bn(_loader([b["lr"] for b in batches]), reference.net)
    bn, ref = ours.net[1], reference.net[1]
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=0, atol=1e-6)
    assert bn.momentum == 0.01  # restored
    # a plain average of the batches' statistics, not a momentum trail from (0, 1)
    x = torch.cat([ours.net[0](b["lr"]) for b in batches]).detach()
    torch.testing.assert_close(bn.running_mean, x.mean((0, 2, 3)), rtol=0, atol=1e-5)


def test_ddp_reduction_equals_the_pooled_statistics():
    ranks = [_batches(3, seed=1, shift=0.0), _batches(3, seed=2, shift=4.0)]
    pooled_model = ToySystem().train()
    with torch.no_grad():
        recompute_batch_norm_statistics(
            training_batch_norms(pooled_model),
            [lambda b=b: pooled_model.net(b["lr"]) for r in ranks for b in r],
        )
    per_rank = []
    for batches in ranks:
        model = ToySystem().train()
        with torch.no_grad():
            recompute_batch_norm_statistics(
                training_batch_norms(model), [partial(model.net, b["lr"]) for b in batches]
            )
        per_rank.append(model)

    # every rank's all-reduce returns the mean of the ranks' tensors
    def reduce(tensor, reduce_op):
        assert reduce_op == "mean"
        for name in ("running_mean", "running_var"):
            if torch.equal(tensor, getattr(per_rank[0].net[1], name).double()):
                return torch.stack([getattr(m.net[1], name).double() for m in per_rank]).mean(0)
        raise AssertionError("unexpected tensor")

    reduce_batch_norm_statistics(training_batch_norms(per_rank[0]), reduce)
    bn, pooled = per_rank[0].net[1], pooled_model.net[1]
    torch.testing.assert_close(bn.running_mean, pooled.running_mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(bn.running_var, pooled.running_var, rtol=0, atol=1e-5)


def _fit(tmp_path: Path, with_callback: bool, steps: int = 6):
    model = ToySystem()
    callbacks = [BatchNormRecalibration(num_batches=4)] if with_callback else []
    trainer = _trainer(tmp_path, callbacks, steps=steps, val_check_interval=3)
    batches = _batches(6)
    trainer.fit(model, _loader(batches), _loader(batches[:1]))
    return model, trainer


def test_training_is_unchanged_and_evaluation_measures_the_trained_network(tmp_path):
    with_cb, trainer = _fit(tmp_path / "a", True)
    without, _ = _fit(tmp_path / "b", False)
    # the same weights: recalibration draws no random number and takes no step
    for (name, p), q in zip(with_cb.named_parameters(), without.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    # eval mode now equals train-mode statistics of recent batches, not the momentum trail
    bn_cb, bn_plain = with_cb.net[1], without.net[1]
    recent = torch.cat([with_cb.net[0](b["lr"]) for b in _batches(6)[2:]]).detach()
    torch.testing.assert_close(bn_cb.running_mean, recent.mean((0, 2, 3)), rtol=0, atol=1e-5)
    assert (bn_plain.running_mean - recent.mean((0, 2, 3))).abs().max() > 0.5
    assert with_cb.val_losses[-1] < without.val_losses[-1]


def test_checkpoint_holds_the_recalibrated_statistics(tmp_path):
    model, trainer = _fit(tmp_path, True, steps=5)  # last step after the last validation
    path = tmp_path / "w.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint[BN_RECALIBRATED_KEY] is True
    saved = checkpoint["state_dict"]["net.1.running_mean"]
    recent = torch.cat([model.net[0](b["lr"]) for b in _batches(6)[1:5]]).detach()
    torch.testing.assert_close(saved, recent.mean((0, 2, 3)), rtol=0, atol=1e-5)
    torch.testing.assert_close(saved, model.net[1].running_mean, rtol=0, atol=0)


def test_long_runs_are_left_alone(tmp_path):
    model = ToySystem(momentum=0.5)
    callback = BatchNormRecalibration(num_batches=2, horizon=1.0)
    trainer = _trainer(tmp_path, [callback], steps=4, val_check_interval=4)
    batches = _batches(4)
    before = {}

    class Snapshot(L.Callback):
        def on_validation_start(self, trainer, pl_module):
            before["mean"] = pl_module.net[1].running_mean.clone()

    trainer.callbacks.insert(0, Snapshot())
    trainer.fit(model, _loader(batches), _loader(batches[:1]))
    # 4 steps * momentum 0.5 >= horizon 1: the running statistics are the momentum trail
    torch.testing.assert_close(model.net[1].running_mean, before["mean"], rtol=0, atol=0)
    assert callback.stale(trainer, training_batch_norms(copy.deepcopy(model).train())) is False


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="num_batches"):
        BatchNormRecalibration(num_batches=0)


class _SaveNorms(L.Callback):
    """Each rank writes its BatchNorm statistics after validation."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_validation_end(self, trainer, pl_module):
        bn = pl_module.net[1]
        torch.save(
            {"mean": bn.running_mean.clone(), "var": bn.running_var.clone()},
            Path(self.folder) / f"rank{trainer.global_rank}.pt",
        )


def test_ddp_ranks_end_identical(tmp_path):
    # each rank gets its own shard of differently shifted batches
    batches = _batches(4, seed=1, shift=0.0) + _batches(4, seed=2, shift=5.0)
    trainer = _trainer(
        tmp_path,
        [BatchNormRecalibration(num_batches=2), _SaveNorms(str(tmp_path))],
        steps=2,
        strategy="ddp_spawn",
        devices=2,
        val_check_interval=2,
        limit_val_batches=1,
        use_distributed_sampler=True,
    )
    trainer.fit(ToySystem(), DataLoader(batches, batch_size=None), _loader(batches[:2]))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    torch.testing.assert_close(ranks[0]["mean"], ranks[1]["mean"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["var"], ranks[1]["var"], rtol=0, atol=0)
    # and they are not one rank's own statistics: the shards differ by 5 in mean input
    assert ranks[0]["mean"].abs().sum() > 0
