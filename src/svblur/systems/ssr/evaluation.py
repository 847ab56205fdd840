"""Measuring SSR's SVKR: per-image kernel error and PSNR/SSIM-Y after each refinement
step (:func:`svkr_scores`, :func:`evaluate_svkr`), and :class:`SVKRTask`, which logs
them in ``trainer.test``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from svblur.errors import InputError
from svblur.metrics import kernel_l1
from svblur.metrics.sr import psnr_y, ssim_y
from svblur.models.ssr import SVKR, Update

from ..base import TrainingSystem
from ..sr import kernels_on_grid
from .assembly import load_svkr, without_depth
from .stage1 import kernel_target

__all__ = ["SVKRTask", "evaluate_svkr", "svkr_scores"]

log = logging.getLogger(__name__)


def svkr_scores(
    svkr: SVKR,
    batch: Mapping[str, torch.Tensor],
    crop_border: int | None = None,
    quantize: bool = True,
    no_depth: SVKR | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image scores of SVKR after each step ``T = 1 .. svkr.iterations``.

    Keys (``t`` = 1 .. T): ``t{t}/kernels/l1`` (kernel-field error on the LR grid, as
    :class:`KernelEstimationTask` measures it; where the batch has ``kernels``),
    ``t{t}/sr/psnr_y`` and ``t{t}/sr/ssim_y`` (Y channel, ``crop_border`` pixels cropped,
    BasicSR convention); and the same under ``no_depth/`` for the SVKR without depth.
    Running ``T`` steps once gives every ``T' <= T``: step ``t`` does not depend on later
    ones.

    Args:
        svkr: The SVKR (its ``iterations`` is the largest ``T``).
        batch: ``lr``, ``hr`` and, where present, ``kernels`` and ``depth``.
        crop_border: Pixels cropped at each border; ``None``: ``svkr.scale``.
        quantize: Round SR images to 8 bits first.
        no_depth: The SVKR without depth; ``None``: ``svkr`` with
            :class:`~svblur.models.ssr.ConstantDepth` (its DKENet given a constant depth).

    Returns:
        ``{key: (B,) tensor}``.
    """
    crop = svkr.scale if crop_border is None else int(crop_border)
    if no_depth is None:
        no_depth = without_depth(svkr)
    lr, hr = batch["lr"], batch["hr"].float()
    lr_size = (lr.shape[-2], lr.shape[-1])
    scores: dict[str, torch.Tensor] = {}
    for prefix, model in (("", svkr), ("no_depth/", no_depth)):
        out = model(lr, depth=batch.get("depth"))
        for t, (sr, kernels) in enumerate(zip(out["sr_steps"], out["kernel_steps"]), start=1):
            key = f"{prefix}t{t}"
            if "kernels" in batch:
                estimate = kernels_on_grid(kernels, lr_size)
                target = kernel_target(batch, estimate.shape[1], lr_size)
                scores[f"{key}/kernels/l1"] = kernel_l1(estimate, target)
            scores[f"{key}/sr/psnr_y"] = psnr_y(sr.float(), hr, crop, quantize)
            scores[f"{key}/sr/ssim_y"] = ssim_y(sr.float(), hr, crop, quantize)
    return scores


def evaluate_svkr(
    svkr: SVKR,
    batches: Iterable[Mapping[str, torch.Tensor]],
    crop_border: int | None = None,
    quantize: bool = True,
    no_depth: SVKR | None = None,
) -> dict[str, float]:
    """Mean over images of :func:`svkr_scores` (a test loader's batches, on ``svkr``'s
    device), e.g. ``evaluate_svkr(load_svkr(s1, s2), datamodule.test_dataloader())``."""
    device = next(iter(svkr.parameters())).device
    sums: dict[str, float] = {}
    count = 0
    svkr.eval()
    for batch in batches:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        for key, values in svkr_scores(svkr, batch, crop_border, quantize, no_depth).items():
            sums[key] = sums.get(key, 0.0) + float(values.double().sum())
        count += batch["lr"].shape[0]
    if count == 0:
        raise InputError("evaluate_svkr: no batches")
    return {key: total / count for key, total in sums.items()}


class SVKRTask(TrainingSystem):
    """Evaluate an SVKR assembled from SSR's stage-1 and stage-2 checkpoints (test only).

    Built from the checkpoints by :func:`load_svkr`; ``trainer.test`` logs every
    :func:`svkr_scores` key under ``test/`` (``test/t1/kernels/l1``,
    ``test/no_depth/t3/sr/psnr_y``, ...; per test group too) and, for the final step with
    depth, ``test/kernels/l1``, ``test/sr/psnr_y`` and ``test/sr/ssim_y``. Run it with
    ``svblur-train experiment=synthetic_ssr_svkr model.stage1_ckpt=... model.stage2_ckpt=...``
    (``train: false`` there). It cannot be trained.

    Args:
        stage1_ckpt: Stage-1 checkpoint (:class:`KernelEstimationTask`).
        stage2_ckpt: Stage-2 checkpoint (:class:`KernelCodeSRTask`).
        iterations: Largest ``T`` (every ``T`` up to it is measured).
        gamma: Kernel blend weight (SSR: 0.9).
        update: ``"alg1"`` or ``"eq2"``.
        no_depth_stage1_ckpt: A stage-1 checkpoint trained without depth
            (``model.depth_estimator=svblur.models.ssr.ConstantDepth``) for the no-depth
            rows; ``None``: the stage-1 DKENet given a constant depth.
        scale: SR factor (the border cropped before PSNR/SSIM).
        quantize_metrics: Round SR images to 8 bits before measuring.
    """

    kind = "kernel_regression"
    metric_stages = ("test",)

    def __init__(
        self,
        stage1_ckpt: str | None = None,
        stage2_ckpt: str | None = None,
        iterations: int = 3,
        gamma: float = 0.9,
        update: Update = "alg1",
        no_depth_stage1_ckpt: str | None = None,
        scale: int = 4,
        quantize_metrics: bool = True,
    ) -> None:
        super().__init__()
        if not stage1_ckpt or not stage2_ckpt:
            raise InputError(
                "SVKR evaluation needs both stages: pass model.stage1_ckpt=<stage-1 .ckpt> and "
                "model.stage2_ckpt=<stage-2 .ckpt>"
            )
        self.save_hyperparameters(logger=False)
        self.net = load_svkr(stage1_ckpt, stage2_ckpt, iterations, gamma, update)
        if self.net.scale != scale:
            raise InputError(
                f"the checkpoints are for scale {self.net.scale}, the data for {scale}"
            )
        self.no_depth = without_depth(self.net)
        if no_depth_stage1_ckpt:
            other = load_svkr(no_depth_stage1_ckpt, stage2_ckpt, iterations, gamma, update)
            self.no_depth = without_depth(self.net, other.kernel_estimator)
        self.init_metrics()

    def _metric_names(self) -> list[str]:
        names = []
        for prefix in ("", "no_depth/"):
            for t in range(1, self.hparams.iterations + 1):
                names += [f"{prefix}t{t}/{m}" for m in ("kernels/l1", "sr/psnr_y", "sr/ssim_y")]
        return names + ["kernels/l1", "sr/psnr_y", "sr/ssim_y"]

    def build_metrics(self) -> nn.ModuleDict:
        return nn.ModuleDict({name: MeanMetric() for name in self._metric_names()})

    def forward(self, lr: torch.Tensor, depth: torch.Tensor | None = None) -> dict[str, Any]:
        return self.net(lr, depth=depth)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        raise InputError("SVKRTask only evaluates: run it with train=false")

    def configure_optimizers(self) -> dict[str, Any]:
        raise InputError("SVKRTask only evaluates: run it with train=false")

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        group, _ = self._test_group(dataloader_idx)
        scores = svkr_scores(
            self.net, batch, self.hparams.scale, self.hparams.quantize_metrics, self.no_depth
        )
        last = f"t{self.hparams.iterations}/"
        scores.update({k[len(last) :]: v for k, v in list(scores.items()) if k.startswith(last)})
        metrics = self.metrics[group]
        for name, values in scores.items():
            metrics[name].update(values.float())
