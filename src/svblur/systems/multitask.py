"""LightningModule for joint blur and semantic estimation (CMOS stage 1)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from svblur.metrics import BlurPSNR, BlurSSIM, BoundaryBlurError, KernelL1, MeanIoU
from svblur.ops.pictures import prediction_panel

from .base import TrainingSystem, log_panel
from .losses import BlurSemanticsLoss

log = logging.getLogger(__name__)


__all__ = ["BlurSemanticsTask", "log_panel"]


class BlurSemanticsTask(TrainingSystem):
    """Train and evaluate any network that maps an LR image to blur and semantic maps.

    The network takes ``batch["lr"]`` ``(B, 3, h, w)`` and returns a dict holding
    ``blur`` ``(B, 1, H, W)`` and/or ``seg`` ``(B, K, H, W)`` at HR size, plus
    optionally ``aux_blur`` / ``aux_seg``. Loss: ``aux_weight * (L1(aux_blur) +
    CE(aux_seg)) + L1(blur) + CE(seg)``. Metrics: ``{stage}/blur/psnr``,
    ``{stage}/blur/ssim`` (sigma / ``blur_norm``, range 1) and ``{stage}/seg/miou``.

    Args:
        net: The network.
        num_classes: Number of semantic classes.
        optimizer: Factory ``params -> Optimizer`` (a ``functools.partial``).
        scheduler: Factory ``(optimizer, total_steps=, steps_per_epoch=) -> LRScheduler``,
            stepped every batch, or ``None``.
        aux: Whether auxiliary outputs are supervised.
        aux_weight: Weight of the auxiliary terms.
        blur_norm: Divisor mapping sigma to about ``[0, 1]`` for the blur metrics.
        gia: Name of the network's GIA variant; recorded in the hyperparameters only,
            so that runs of an ablation sweep can be grouped by it.
        log_images: Number of validation images logged per epoch (0 disables).
        compile: Wrap the network with ``torch.compile`` at fit start.
        blur_bias_init: Where the blur outputs start, for networks with an
            ``init_blur_bias(sigma)`` method (CMOS): ``None`` (as built), a sigma, or
            ``"train_mean"``: the mean sigma of the first ``blur_bias_batches`` training
            batches, averaged over the DDP ranks, measured when a fit starts from scratch
            (not on resume).
        blur_bias_batches: See ``blur_bias_init``.
    """

    kind = "blur_semantics"

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        aux: bool = True,
        aux_weight: float = 0.5,
        blur_norm: float = 5.0,
        gia: str | None = None,
        log_images: int = 4,
        compile: bool = False,
        blur_bias_init: float | str | None = None,
        blur_bias_batches: int = 16,
    ) -> None:
        super().__init__()
        if isinstance(blur_bias_init, str) and blur_bias_init != "train_mean":
            raise ValueError(
                f"blur_bias_init must be null, a sigma or 'train_mean', got {blur_bias_init!r}"
            )
        # Plain values only, so that checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.criterion = BlurSemanticsLoss(aux_weight=aux_weight, use_aux=aux)
        self.init_metrics()

    def build_metrics(self) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "blur/psnr": BlurPSNR(self.hparams.blur_norm),
                "blur/ssim": BlurSSIM(self.hparams.blur_norm),
                # sigma MAE over all pixels and, where batches carry depth, near depth
                # discontinuities (svblur.metrics.boundary)
                "blur/mae": BoundaryBlurError("mae", region="all"),
                "blur/boundary_mae": BoundaryBlurError("mae", region="boundary"),
                "blur/boundary_psnr": BoundaryBlurError(
                    "psnr", region="boundary", blur_norm=self.hparams.blur_norm
                ),
                "seg/miou": MeanIoU(self.hparams.num_classes),
                # kernel fields (MANet's kernel head on Gaussian / motion degradations)
                "kernels/l1": KernelL1(),
            }
        )

    def forward(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(lr)

    def on_fit_start(self) -> None:
        init = self.hparams.get("blur_bias_init")
        if init is None or self.trainer.ckpt_path is not None:
            return
        if not hasattr(self.net, "init_blur_bias"):
            raise ValueError(
                f"model.blur_bias_init: {type(self.net).__name__} has no init_blur_bias()"
            )
        sigma = float(init) if not isinstance(init, str) else self._train_mean_sigma()
        log.info("blur outputs start at sigma %.4f (blur_bias_init=%s)", sigma, init)
        self.net.init_blur_bias(sigma)

    def _train_mean_sigma(self) -> float:
        """Mean sigma of the first ``blur_bias_batches`` training batches (all ranks)."""
        loader = self.trainer.datamodule.train_dataloader()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        for i, batch in enumerate(loader):
            if i >= self.hparams.blur_bias_batches:
                break
            if "blur" not in batch:
                raise ValueError("model.blur_bias_init=train_mean: the data has no blur map")
            total[0] += batch["blur"].double().sum().to(self.device)
            total[1] += batch["blur"].numel()
        total = self.trainer.strategy.reduce(total, reduce_op="sum")
        return float(total[0] / total[1].clamp(min=1))

    def _shared_step(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = self.net(batch["lr"])
        losses = self.criterion(outputs, batch)
        terms = {name: value for name, value in losses.items() if name != "total"}
        self._log_terms(stage, terms, batch["lr"].shape[0], losses["total"])
        return losses["total"], outputs

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")[0]

    def _update_metrics(
        self, group: str, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> None:
        metrics = self.metrics[group]
        if "kernels" in outputs and "kernels" in batch:
            metrics["kernels/l1"].update(outputs["kernels"].float(), batch["kernels"])
        if "blur" in outputs and "blur" in batch:
            metrics["blur/psnr"].update(outputs["blur"].float(), batch["blur"])
            metrics["blur/ssim"].update(outputs["blur"].float(), batch["blur"])
            metrics["blur/mae"].update(outputs["blur"].float(), batch["blur"])
            depth = batch.get("depth")
            if depth is not None and depth.shape == batch["blur"].shape:
                for name in ("blur/boundary_mae", "blur/boundary_psnr"):
                    metrics[name].update(outputs["blur"].float(), batch["blur"], depth)
        if "seg" in outputs and "seg" in batch:
            metrics["seg/miou"].update(outputs["seg"].float(), batch["seg"])

    def in_progress_bar(self, name: str) -> bool:
        return name != "blur/ssim"

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, outputs = self._shared_step(batch, "val")
        self._update_metrics("val", outputs, batch)
        if batch_idx == 0 and self.hparams.log_images > 0:
            self._log_panel(batch, outputs)

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        group, stage = self._test_group(dataloader_idx)
        _, outputs = self._shared_step(batch, stage)
        self._update_metrics(group, outputs, batch)

    @torch.no_grad()
    def _log_panel(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        if self.trainer is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        blur = "blur" in outputs and "blur" in batch
        seg = "seg" in outputs and "seg" in batch
        if not (blur or seg):
            return  # e.g. a kernel field: no map to draw
        n = min(self.hparams.log_images, batch["lr"].shape[0])
        blur_vmax = float(batch["blur"][:n].max().clamp(min=1.0)) if blur else 1.0
        panel = prediction_panel(
            batch["lr"][:n],
            batch["blur"][:n] if blur else None,
            outputs["blur"][:n] if blur else None,
            batch["seg"][:n] if seg else None,
            outputs["seg"][:n] if seg else None,
            self.hparams.num_classes,
            blur_vmax,
        )
        caption = "LR | GT blur | predicted blur | GT seg | predicted seg"
        for logger in self.loggers:
            log_panel(logger, "val/predictions", panel, self.global_step, caption)
