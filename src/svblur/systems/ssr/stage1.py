"""SSR stage 1: :class:`KernelEstimationTask` trains DKENet (per-pixel kernels from the
LR image and its depth) on the ground-truth kernel field."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanAbsoluteError

from svblur.checkpoints import (
    build_network,
)
from svblur.degradation import imresize
from svblur.errors import InputError
from svblur.metrics import KernelL1, kernel_l1
from svblur.models.depth import DepthEstimator, GroundTruthDepth
from svblur.models.ssr import ConstantDepth

from ..base import TrainingSystem
from ..sr import kernels_on_grid

__all__ = ["KernelEstimationTask", "kernel_target"]

log = logging.getLogger(__name__)

DepthSource = Literal["hr", "lr"]


def kernel_target(batch: Mapping[str, Any], taps: int, lr_size: tuple[int, int]) -> torch.Tensor:
    """The batch's ground-truth field averaged to the LR grid, checked against ``taps``."""
    if "kernels" not in batch:
        raise InputError(
            "SSR's kernel supervision needs data with a ground-truth kernel field: "
            "degradation=gaussian_sv (this batch has none)"
        )
    target = batch["kernels"]
    if target.shape[1] != taps:
        raise InputError(
            f"the network works with {taps}-tap kernels, the data has {target.shape[1]}-tap "
            "ones; set the same kernel size (degradation.blur.kernel_size and the model's)"
        )
    return kernels_on_grid(target, lr_size)


class KernelEstimationTask(TrainingSystem):
    """SSR stage 1: train DKENet on the ground-truth kernel field.

    For each batch the depth estimator sees the HR image (``depth_from="hr"``; the SR
    images SVKR feeds it approach it) or the bicubically upscaled LR image (``"lr"``, SVKR's
    ``I[0]``), and the data's depth (read only by :class:`~svblur.models.GroundTruthDepth`,
    by default as the signed defocus about the camera model's focus, which the kernels of
    ``degradation=gaussian_sv`` are a function of); DKENet gets the LR image and that
    depth. Kernel loss: :func:`svblur.metrics.kernel_l1`
    on the LR grid (the estimate and the ground truth averaged over each ``scale x scale``
    block; DKENet's field is constant there by construction). A depth estimator with
    trainable parameters also gets ``depth_weight`` times the L1 distance between its
    estimate and the data's depth, both normalized per image
    (:func:`~svblur.models.depth.normalize_depth`); the kernel loss does not reach it
    (its depth is detached), so each network learns its own target.

    The depth estimator is built here from plain values (kept in the checkpoint's
    hyper-parameters, so that :func:`load_svkr` rebuilds it): ``depth_estimator`` is the
    class (a :class:`~svblur.models.DepthEstimator`), ``depth_kwargs`` its arguments (for
    a ``GroundTruthDepth`` completed with its ``form``, ``focus_quantile`` and
    ``defocus_scale``).

    Logged: ``{stage}/loss``, ``{stage}/loss/kernels``, ``{stage}/loss/depth`` (trainable
    depth only), ``val|test/kernels/l1`` and, when the data has depth and the estimator
    is not the ground truth, ``val|test/depth/l1``.

    Args:
        net: The kernel estimator, ``net(lr, depth) -> (B, k*k, H, W)`` (a DKENet).
        optimizer: Factory ``params -> Optimizer``.
        scheduler: Factory ``(optimizer, total_steps=, steps_per_epoch=) -> LRScheduler``
            or ``None``.
        depth_estimator: Class path of the depth estimator: ``svblur.models.GroundTruthDepth``
            (the data's depth), ``svblur.models.SMPDepthNet`` (trained here),
            ``svblur.models.HFDepth`` (frozen, from a local folder: ``depth_kwargs.path``)
            or ``svblur.models.ssr.ConstantDepth`` (no depth).
        depth_kwargs: Arguments of that class.
        depth_from: The image the depth estimator sees, ``"hr"`` or ``"lr"``.
        depth_weight: Weight of the depth loss of a trainable depth estimator.
        scale: SR factor of the data (the kernel field is at HR size).
        compile: Compile the kernel estimator at fit start.
    """

    kind = "kernel_estimation"

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        depth_estimator: str = "svblur.models.GroundTruthDepth",
        depth_kwargs: dict[str, Any] | None = None,
        depth_from: DepthSource = "hr",
        depth_weight: float = 1.0,
        scale: int = 4,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if depth_from not in ("hr", "lr"):
            raise ValueError(f"depth_from must be 'hr' or 'lr', got {depth_from!r}")
        if depth_weight < 0:
            raise ValueError(f"depth_weight must be >= 0, got {depth_weight}")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        estimator = build_network({"_target_": depth_estimator, **(depth_kwargs or {})})
        if not isinstance(estimator, DepthEstimator):
            raise InputError(
                f"depth_estimator {depth_estimator!r} is not a svblur.models.DepthEstimator"
            )
        if isinstance(estimator, GroundTruthDepth):
            # the checkpoint records the form, so that load_svkr rebuilds this very input
            self.hparams.depth_kwargs = {
                **(depth_kwargs or {}),
                "form": estimator.form,
                "focus_quantile": estimator.focus_quantile,
                "defocus_scale": estimator.defocus_scale,
            }
        self.depth_estimator = estimator
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.init_metrics()

    @property
    def trains_depth(self) -> bool:
        """Whether the depth estimator has trainable parameters (and a depth loss)."""
        return any(p.requires_grad for p in self.depth_estimator.parameters())

    def build_metrics(self) -> nn.ModuleDict:
        metrics: dict[str, nn.Module] = {"kernels/l1": KernelL1()}
        if not isinstance(self.depth_estimator, (GroundTruthDepth, ConstantDepth)):
            metrics["depth/l1"] = MeanAbsoluteError()
        return nn.ModuleDict(metrics)

    def in_progress_bar(self, name: str) -> bool:
        return name == "kernels/l1"

    def depth_image(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """What the depth estimator sees ``(B, 3, H, W)`` (see ``depth_from``)."""
        if self.hparams.depth_from == "hr":
            return batch["hr"]
        return imresize(batch["lr"], int(self.hparams.scale)).clamp(0.0, 1.0)

    def forward(self, lr: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Kernels ``(B, k*k, H, W)`` of ``lr`` given its depth."""
        return self.net(lr, depth)

    def predict_maps(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"kernels": (B, k*k, H, W), "depth": (B, 1, H, W)}`` for a batch."""
        if isinstance(self.depth_estimator, GroundTruthDepth) and "depth" not in batch:
            raise InputError(
                "model.depth_estimator=svblur.models.GroundTruthDepth needs data with depth; "
                "this data set has none: use svblur.models.ssr.ConstantDepth (no depth) or "
                "svblur.models.HFDepth with model.depth_kwargs.path=<local model folder>"
            )
        depth = self.depth_estimator(self.depth_image(batch), depth=batch.get("depth"))
        return {"kernels": self.net(batch["lr"], depth.detach()), "depth": depth}

    def _depth_target(self, batch: Mapping[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        return GroundTruthDepth("minmax")(like, depth=batch["depth"])

    def _step(
        self, batch: Mapping[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = self.predict_maps(batch)
        lr_size = (batch["lr"].shape[-2], batch["lr"].shape[-1])
        estimate = kernels_on_grid(outputs["kernels"], lr_size)
        target = kernel_target(batch, estimate.shape[1], lr_size)
        terms = {"kernels": kernel_l1(estimate, target).mean()}
        if self.trains_depth and self.hparams.depth_weight > 0:
            if "depth" not in batch:
                raise InputError(
                    f"{type(self.depth_estimator).__name__} is trained on the data's depth, "
                    "which this data set does not have; freeze it or use another estimator"
                )
            depth_target = self._depth_target(batch, outputs["depth"])
            depth_loss = F.l1_loss(outputs["depth"].float(), depth_target.float())
            terms["depth"] = self.hparams.depth_weight * depth_loss
        loss = sum(terms.values())
        self._log_terms(stage, terms, batch["lr"].shape[0], loss)
        outputs["kernels_lr"], outputs["kernels_target"] = estimate, target
        return loss, outputs

    def _update_metrics(
        self, group: str, outputs: dict[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> None:
        metrics = self.metrics[group]
        metrics["kernels/l1"].update(outputs["kernels_lr"], outputs["kernels_target"])
        if "depth/l1" in metrics and "depth" in batch:
            target = self._depth_target(batch, outputs["depth"])
            metrics["depth/l1"].update(outputs["depth"].float(), target.float())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, outputs = self._step(batch, "val")
        self._update_metrics("val", outputs, batch)

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        group, stage = self._test_group(dataloader_idx)
        _, outputs = self._step(batch, stage)
        self._update_metrics(group, outputs, batch)
