"""LightningModules for super-resolution: stage 2 (non-blind) and stage 3 (blind) of CMOS.

- :class:`NonBlindSRTask` trains RRDB-SFT on the ground-truth blur and semantic maps (the
  paper's "upper bound").
- :class:`BlindSRTask` fine-tunes RRDB-SFT on the estimates of a frozen CMOS (blind SR),
  starting from a stage-1 and a stage-2 checkpoint.

Both use the L1 loss between SR and HR images and log ``{stage}/sr/psnr_y`` and
``{stage}/sr/ssim_y`` (BasicSR convention, see :mod:`svblur.metrics.sr`), computed in
float32/64 whatever the training precision. During testing every image is counted once,
also under DDP (the distributed sampler's padding duplicates are recognised and skipped),
and per-image results are kept in :attr:`SuperResolutionTask.test_results`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, DistributedSampler

from svblur.checkpoints import load_weights
from svblur.errors import InputError
from svblur.metrics import (
    SRPSNR,
    SRSSIM,
    BlurPSNR,
    BlurSSIM,
    KernelL1,
    MeanIoU,
    SRPerceptual,
    kernel_l1,
    local_perceptual_metrics,
)
from svblur.metrics.functional import IGNORE_INDEX
from svblur.metrics.iqa import IQAMean, local_iqa_metrics
from svblur.metrics.metrics import PerImageMean
from svblur.models.blind_sr import BlindSR
from svblur.models.rrdb_sft import RRDBSFT
from svblur.ops.colour import colorize_labels, colorize_scalar

from .base import TrainingSystem, log_panel

__all__ = [
    "BlindSRTask",
    "KernelBlindSRTask",
    "NonBlindSRTask",
    "SuperResolutionTask",
    "kernels_on_grid",
    "sample_positions",
]

log = logging.getLogger(__name__)


def sample_positions(loader: DataLoader) -> list[int | None] | None:
    """Data set index of each sample a loader yields on this process, ``None`` for padding.

    A :class:`~torch.utils.data.DistributedSampler` (what Lightning inserts under DDP) pads
    the index list so that every process gets the same number of samples; those padded
    entries repeat images another process also evaluates. They are the global positions
    ``>= len(dataset)``: process ``rank`` gets positions ``rank, rank + world, ...``.

    Returns:
        One entry per sample in iteration order, or ``None`` when the loader's sampler is
        not index-based (then every sample counts).
    """
    sampler = getattr(loader, "sampler", None)
    if sampler is None:
        return None
    if isinstance(sampler, DistributedSampler):
        indices = [_as_index(i) for i in sampler]
        size = len(sampler.dataset)  # type: ignore[arg-type]
        world, rank = sampler.num_replicas, sampler.rank
        return [idx if rank + pos * world < size else None for pos, idx in enumerate(indices)]
    try:
        return [_as_index(i) for i in sampler]
    except TypeError:
        return None


def _as_index(item: Any) -> int:
    # Some samplers yield (index, epoch) pairs (svblur.data.loaders.EpochSampler).
    return int(item[0]) if isinstance(item, (tuple, list)) else int(item)


class SuperResolutionTask(TrainingSystem):
    """Shared training/evaluation logic of the SR stages (subclasses define the forward).

    Args:
        net: The network.
        optimizer: Factory ``params -> Optimizer`` (a ``functools.partial``).
        scheduler: Factory ``(optimizer, total_steps=, steps_per_epoch=) -> LRScheduler``,
            stepped every batch, or ``None``.
        scale: SR factor; also the border cropped before the SR metrics.
        num_classes: Semantic classes (for the estimator metrics of stage 3).
        rgb_metrics: Also log ``sr/psnr_rgb`` and ``sr/ssim_rgb``.
        quantize_metrics: Round SR images to 8 bits before measuring (as saved PNGs).
        blur_norm: Divisor of sigma for the blur-map metrics (stage 3).
        log_images: Number of validation images logged per epoch (0 disables).
        compile: Wrap the network with ``torch.compile`` at fit start.
        perceptual_metrics: Learned metrics to log as ``sr/<name>`` (``"lpips"``,
            ``"dists"``; lower is better), built from weight files already on this machine
            (:func:`svblur.metrics.local_perceptual_metrics`: ``perceptual_weights_dir``,
            then the torch hub cache); a missing file is a clear error, never a download.
        perceptual_weights_dir: Folder holding those weight files (``None``: the hub cache).
        iqa_metrics: pyiqa metrics logged at test as ``test/iqa/<name>`` (SSR Tab. 1:
            ``lpips``, ``musiq``, ``niqe``, ``clipiqa``; :mod:`svblur.metrics.iqa`), from
            weight files in ``iqa_weights_dir`` only; a metric whose file is absent is
            skipped with one log line naming the file. Not measured at validation.
        iqa_weights_dir: Folder of pyiqa's weight files (``None``: pyiqa's and torch's
            caches; nothing is downloaded either way).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        scale: int = 4,
        num_classes: int = 40,
        rgb_metrics: bool = False,
        quantize_metrics: bool = True,
        blur_norm: float = 5.0,
        log_images: int = 4,
        compile: bool = False,
        perceptual_metrics: Sequence[str] = (),
        perceptual_weights_dir: str | None = None,
        iqa_metrics: Sequence[str] = (),
        iqa_weights_dir: str | None = None,
    ) -> None:
        super().__init__()
        # Plain values only, so that checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._perceptual = (
            local_perceptual_metrics(perceptual_weights_dir, names=list(perceptual_metrics))
            if perceptual_metrics
            else {}
        )
        self._iqa = local_iqa_metrics(list(iqa_metrics), iqa_weights_dir)
        #: Per-image test results (one dict per image: group, index, name, metrics), gathered
        #: from all processes after :meth:`trainer.test`.
        self.test_results: list[dict[str, Any]] = []
        self._test_rows: list[dict[str, Any]] = []
        self._positions: dict[int, list[int | None] | None] = {}
        self.init_metrics()

    # ------------------------------------------------------------------ to override
    def predict_maps(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Network outputs for a batch: ``sr`` and, in stage 3, the estimates."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters handed to the optimizer: the network's trainable ones."""
        return [p for p in self.net.parameters() if p.requires_grad]

    @property
    def estimates(self) -> bool:
        """Whether the outputs include estimated blur/semantic maps to be measured."""
        return False

    @property
    def estimates_kernels(self) -> bool:
        """Whether the outputs include an estimated kernel field to be measured."""
        return False

    def extra_losses(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Loss terms added to the SR L1 loss, by name (none here)."""
        return {}

    # ------------------------------------------------------------------ metrics
    def build_metrics(self) -> nn.ModuleDict:
        crop, quantize = self.hparams.scale, self.hparams.quantize_metrics
        metrics: dict[str, nn.Module] = {
            "sr/psnr_y": SRPSNR(crop, y_channel=True, quantize=quantize),
            "sr/ssim_y": SRSSIM(crop, y_channel=True, quantize=quantize),
        }
        for name, network in self._perceptual.items():
            metrics[f"sr/{name}"] = SRPerceptual(network, crop)
        for name, model in self._iqa.items():
            metrics[f"iqa/{name}"] = IQAMean(name, model, crop)
        if self.hparams.rgb_metrics:
            metrics["sr/psnr_rgb"] = SRPSNR(crop, y_channel=False, quantize=quantize)
            metrics["sr/ssim_rgb"] = SRSSIM(crop, y_channel=False, quantize=quantize)
        if self.estimates_kernels:
            metrics["kernels/l1"] = KernelL1()
        if self.estimates:
            metrics["blur/psnr"] = BlurPSNR(self.hparams.blur_norm)
            metrics["blur/ssim"] = BlurSSIM(self.hparams.blur_norm)
            metrics["seg/miou"] = MeanIoU(self.hparams.num_classes)
        return nn.ModuleDict(metrics)

    def init_metrics(self) -> None:
        super().init_metrics()
        # the pyiqa metrics are for tests only (MUSIQ and CLIP-IQA cost more than a step)
        validation = self.metrics["val"] if "val" in self.metrics else {}
        for name in [n for n in validation if n.startswith("iqa/")]:
            del validation[name]

    @staticmethod
    def metric_inputs(
        name: str, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """What metric ``name`` compares in a batch, ``(estimate, target)``, or ``None``
        when the outputs or the batch lack it (e.g. a kernel field of another size)."""
        kind = name.split("/")[0]
        if kind in ("sr", "iqa"):
            return outputs["sr"].float(), batch["hr"].float()
        if kind in ("blur", "seg") and kind in outputs and kind in batch:
            return outputs[kind].float(), batch[kind]
        if kind == "kernels" and "kernels" in outputs and "kernels" in batch:
            estimate = outputs["kernels"].float()
            if estimate.shape[1] == batch["kernels"].shape[1]:
                return estimate, kernels_on_grid(batch["kernels"], estimate.shape[-2:])
        return None

    def _update_metrics(
        self,
        group: str,
        outputs: dict[str, torch.Tensor],
        batch: dict[str, torch.Tensor],
        keep: torch.Tensor | None = None,
    ) -> None:
        if keep is not None and not bool(keep.any()):
            return
        for name, metric in self.metrics[group].items():
            inputs = self.metric_inputs(name, outputs, batch)
            if inputs is not None:
                metric.update(*(x if keep is None else x[keep] for x in inputs))

    def in_progress_bar(self, name: str) -> bool:
        return name == "sr/psnr_y"

    # ------------------------------------------------------------------ steps
    def _step(
        self, batch: dict[str, torch.Tensor], stage: str, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = self.predict_maps(batch)
        sr = outputs["sr"]
        if sr.shape != batch["hr"].shape:
            raise ValueError(
                f"SR output {tuple(sr.shape)} and HR target {tuple(batch['hr'].shape)} differ: "
                f"check that the network's scale equals the data's scale ({self.hparams.scale})"
            )
        if keep is None:
            loss = F.l1_loss(sr.float(), batch["hr"].float())
        else:
            diff = (sr.float() - batch["hr"].float()).abs().flatten(1).mean(1)
            loss = diff[keep].mean() if bool(keep.any()) else diff.sum() * 0.0
        batch_size = int(keep.sum()) if keep is not None else batch["lr"].shape[0]
        terms = self.extra_losses(outputs, batch)
        for term in terms.values():
            loss = loss + term
        self._log_terms(stage, terms, batch_size, loss)
        return loss, outputs

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, outputs = self._step(batch, "val")
        self._update_metrics("val", outputs, batch)
        if batch_idx == 0 and self.hparams.log_images > 0:
            self._log_panel(batch, outputs)

    def on_test_start(self) -> None:
        super().on_test_start()
        self._test_rows = []
        self._positions = {}
        loaders = self.trainer.test_dataloaders
        if isinstance(loaders, DataLoader):
            loaders = [loaders]
        for idx, loader in enumerate(loaders or []):
            if isinstance(loader, DataLoader):
                self._positions[idx] = sample_positions(loader)

    def _batch_indices(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int
    ) -> list[int | None]:
        """Data set index of each sample of a test batch (``None``: padding duplicate)."""
        size = batch["lr"].shape[0]
        positions = self._positions.get(dataloader_idx)
        loaders = self.trainer.test_dataloaders
        loader = loaders[dataloader_idx] if isinstance(loaders, list) else loaders
        batch_size = getattr(loader, "batch_size", None) or size
        start = batch_idx * batch_size
        if positions is None:
            return list(range(start, start + size))
        return [positions[p] if p < len(positions) else p for p in range(start, start + size)]

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        group, stage = self._test_group(dataloader_idx)
        indices = self._batch_indices(batch, batch_idx, dataloader_idx)
        keep = torch.tensor([i is not None for i in indices], device=batch["lr"].device)
        _, outputs = self._step(batch, stage, keep)
        self._update_metrics(group, outputs, batch, keep)
        self._record_rows(group, indices, outputs, batch)

    @torch.no_grad()
    def _record_rows(
        self,
        group: str,
        indices: list[int | None],
        outputs: dict[str, torch.Tensor],
        batch: dict[str, torch.Tensor],
    ) -> None:
        # every per-image metric of the group, measured as its torchmetric measures it
        scores: dict[str, torch.Tensor] = {}
        for name, metric in self.metrics[group].items():
            inputs = self.metric_inputs(name, outputs, batch)
            if isinstance(metric, PerImageMean) and inputs is not None:
                scores[name] = metric.scores(*inputs)
        names = batch.get("name")
        for i, index in enumerate(indices):
            if index is None:
                continue
            row: dict[str, Any] = {"group": group, "index": int(index)}
            if isinstance(names, (list, tuple)):
                row["name"] = str(names[i])
            row.update({k: float(v[i]) for k, v in scores.items()})
            self._test_rows.append(row)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        rows = self._test_rows
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
        order = {g: i for i, g in enumerate(self.test_groups or ["test"])}
        self.test_results = sorted(rows, key=lambda r: (order.get(r["group"], 0), r["index"]))

    # ------------------------------------------------------------------ images
    @torch.no_grad()
    def _log_panel(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        if self.trainer is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        n = min(self.hparams.log_images, batch["lr"].shape[0])
        size = batch["hr"].shape[-2:]
        tiles = [
            F.interpolate(batch["lr"][:n].float(), size=size, mode="nearest"),
            outputs["sr"][:n].float(),
            batch["hr"][:n].float(),
        ]
        caption = "LR | SR | HR"
        if "blur" in outputs and "seg" in outputs:
            vmax = float(batch["blur"][:n].max().clamp(min=1.0))
            tiles += [
                colorize_scalar(outputs["blur"][:n], vmax),
                colorize_labels(outputs["seg"][:n].argmax(1), self.hparams.num_classes),
            ]
            caption += " | estimated blur | estimated semantics"
        rows = torch.cat([t.clamp(0, 1).cpu() for t in tiles], dim=-1)
        panel = torch.cat(list(rows), dim=-2)
        for logger in self.loggers:
            log_panel(logger, "val/sr", panel, self.global_step, caption)


class NonBlindSRTask(SuperResolutionTask):
    """Stage 2: train a non-blind SR network (RRDB-SFT) on the ground-truth maps.

    The network gets ``batch["lr"]``, the ground-truth sigma map ``batch["blur"]`` and the
    ground-truth semantics ``batch["seg"]`` (as class map; as one-hot probabilities when
    its ``seg_encoding`` is ``"probs"``, ignored pixels all zero), or, for an RRDB-SFT
    conditioned on kernels, the ground-truth kernel field ``batch["kernels"]``.

    Args:
        net: An :class:`~svblur.models.RRDBSFT` (any module with the same call signature
            and ``seg_encoding`` attribute).
        **kwargs: See :class:`SuperResolutionTask`.
    """

    kind = "non_blind_sr"

    def __init__(self, net: RRDBSFT, **kwargs: Any) -> None:
        super().__init__(net, **kwargs)

    def gt_seg_input(self, seg: torch.Tensor) -> torch.Tensor | None:
        """Ground-truth labels ``(B, H, W)`` in the network's ``seg_encoding``."""
        encoding = getattr(self.net, "seg_encoding", "index")
        if encoding == "none":
            return None
        if encoding == "probs":
            num_classes = int(self.net.num_classes)  # type: ignore[arg-type]
            valid = (seg >= 0) & (seg < num_classes) & (seg != IGNORE_INDEX)
            onehot = F.one_hot(torch.where(valid, seg, 0).long(), num_classes)
            return (onehot * valid.unsqueeze(-1)).permute(0, 3, 1, 2).float()
        return seg

    def predict_maps(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if getattr(self.net, "kernel_channels", None) is not None:
            return {"sr": self.net(batch["lr"], kernels=batch["kernels"])}
        return {"sr": self.net(batch["lr"], batch["blur"], self.gt_seg_input(batch["seg"]))}

    def forward(
        self, lr: torch.Tensor, blur: torch.Tensor, seg: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.net(lr, blur, seg)


class BlindSRTask(SuperResolutionTask):
    """Stage 3: fine-tune RRDB-SFT on the estimates of a frozen CMOS (blind SR).

    At the start of training (not when resuming, testing or predicting) the estimator gets
    the stage-1 checkpoint ``estimator_ckpt`` and the SR network the stage-2 checkpoint
    ``sr_ckpt``; each may be a Lightning checkpoint of svblur, a state dict, or the
    authors' released file (see :func:`svblur.checkpoints.load_weights`). The estimator
    is frozen (:class:`~svblur.models.BlindSR` with ``freeze_estimator=True``: eval mode
    kept through Lightning's ``train()`` calls, no gradients) and left out of the optimizer.
    Logged: the SR metrics and, for information, the estimator's ``blur/psnr``,
    ``blur/ssim`` and ``seg/miou``.

    Args:
        net: A :class:`~svblur.models.BlindSR`.
        estimator_ckpt: Stage-1 checkpoint (CMOS).
        sr_ckpt: Stage-2 checkpoint (RRDB-SFT).
        **kwargs: See :class:`SuperResolutionTask`.
    """

    kind = "blind_sr"

    def __init__(
        self,
        net: BlindSR,
        estimator_ckpt: str | None = None,
        sr_ckpt: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(net, BlindSR):
            raise TypeError(f"BlindSRTask needs a svblur.models.BlindSR, got {type(net).__name__}")
        super().__init__(net, **kwargs)

    @property
    def estimates(self) -> bool:
        return True

    @property
    def blind_sr(self) -> BlindSR:
        return self.net  # type: ignore[return-value]

    def trainable_parameters(self) -> list[nn.Parameter]:
        if not self.blind_sr.freeze_estimator:
            return super().trainable_parameters()
        frozen = {id(p) for p in self.blind_sr.estimator.parameters()}
        return [p for p in self.net.parameters() if p.requires_grad and id(p) not in frozen]

    def load_stage_checkpoints(self) -> None:
        """Load ``estimator_ckpt`` and ``sr_ckpt`` into the network (see the class docstring)."""
        for key, module in (
            ("estimator_ckpt", self.blind_sr.estimator),
            ("sr_ckpt", self.blind_sr.sr),
        ):
            path = self.hparams.get(key)
            if not path:
                raise ValueError(
                    f"model.{key} is not set: stage 3 starts from the "
                    f"{'stage-1 (CMOS)' if key == 'estimator_ckpt' else 'stage-2 (RRDB-SFT)'} "
                    f"checkpoint; pass model.{key}=/path/to/file.ckpt"
                )
            load_weights(module, Path(path))
            log.info("Loaded %s from %s", key, path)
        if self.blind_sr.freeze_estimator:
            self.blind_sr.estimator.eval()

    def setup(self, stage: str) -> None:
        if stage == "fit" and getattr(self.trainer, "ckpt_path", None) is None:
            self.load_stage_checkpoints()
        super().setup(stage)

    def predict_maps(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.net(batch["lr"])

    def forward(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(lr)


def kernels_on_grid(kernels: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """A kernel field ``(B, k*k, H, W)`` on a coarser grid ``size`` (the LR image's): each
    cell's kernels averaged (still normalized)."""
    if tuple(kernels.shape[-2:]) == tuple(size):
        return kernels.float()
    return F.adaptive_avg_pool2d(kernels.float(), tuple(size))


class KernelBlindSRTask(SuperResolutionTask):
    """Blind SR by one network that estimates a kernel field on the way (ArcSR).

    The network maps ``batch["lr"]`` to ``{"sr": (B, 3, H, W), "kernels": (B, k*k, h, w)}``.
    Loss: L1 on SR, as ArcSR (its kernels get no supervision); with ``kernel_weight > 0``
    also ``kernel_weight`` times the kernel L1 (:func:`svblur.metrics.kernel_l1`) against
    the data's ground-truth field (``degradation=motion_sv`` / ``gaussian_sv``), averaged
    to the estimate's grid (:func:`kernels_on_grid`). Logged: the SR metrics and, where the
    data has a field of the same kernel size, ``kernels/l1``.

    Args:
        net: The network (:class:`~svblur.models.ArcSR`).
        kernel_weight: Weight of the kernel loss (0: off, as the paper).
        **kwargs: See :class:`SuperResolutionTask`.
    """

    kind = "blind_sr"

    def __init__(self, net: nn.Module, kernel_weight: float = 0.0, **kwargs: Any) -> None:
        if kernel_weight < 0:
            raise ValueError(f"kernel_weight must be >= 0, got {kernel_weight}")
        super().__init__(net, **kwargs)

    @property
    def estimates_kernels(self) -> bool:
        return True

    def predict_maps(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.net(batch["lr"])

    def forward(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(lr)

    def extra_losses(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        weight = float(self.hparams.kernel_weight)
        if weight == 0:
            return {}
        if "kernels" not in batch:
            raise InputError(
                "model.kernel_weight > 0 needs data with a ground-truth kernel field "
                "(degradation=motion_sv or gaussian_sv); this batch has none"
            )
        estimate = outputs["kernels"]
        if estimate.shape[1] != batch["kernels"].shape[1]:
            raise InputError(
                f"model.kernel_weight > 0: the network estimates {estimate.shape[1]}-tap "
                f"kernels, the data has {batch['kernels'].shape[1]}-tap ones; set the same "
                "kernel size (degradation.blur.kernel_size and the model's kernel_size)"
            )
        target = kernels_on_grid(batch["kernels"], estimate.shape[-2:])
        return {"kernels": weight * kernel_l1(estimate, target).mean()}
