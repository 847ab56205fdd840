"""SSR's training stages 1 and 2, the SVKR they make up, and its evaluation.

- :class:`KernelEstimationTask` (stage 1): :class:`~svblur.models.DKENet` supervised on the
  ground-truth kernel field (kernel L1), with depth from a configurable
  :class:`~svblur.models.DepthEstimator`; a trainable one (:class:`~svblur.models.SMPDepthNet`)
  learns from the data's depth with its own L1 loss.
- :class:`KernelCodeSRTask` (stage 2): RRDB-SFT on the ground-truth kernel field reduced to
  the per-pixel PCA code SVKR gives it; the basis is fitted from the degradation's kernel
  distribution (:func:`~svblur.models.ssr.fit_kernel_pca`) and kept in the checkpoint.
- :func:`load_svkr`: an :class:`~svblur.models.SVKR` from a stage-1 and a stage-2
  checkpoint (what SSR's diffusion stage conditions on); :func:`assemble_svkr` writes it
  as one checkpoint that :func:`svblur.models.load_network` and ``svblur-predict`` read.
- :func:`svkr_scores`, :func:`evaluate_svkr` and :class:`SVKRTask`: kernel-field error and
  PSNR/SSIM-Y after each refinement step ``T = 1 .. iterations``, with the depth estimator
  and without depth (:class:`~svblur.models.ssr.ConstantDepth`).

The paper gives no schedule, data or loss for stages 1 and 2 (see the configs
``model=dkenet``, ``model=svkr_sr`` and ``experiment=synthetic_ssr_stage{1,2}``).

Usage::

    svblur-train experiment=synthetic_ssr_stage1          # -> S1 = .../checkpoints/last.ckpt
    svblur-train experiment=synthetic_ssr_stage2          # -> S2
    svblur-train experiment=synthetic_ssr_svkr model.stage1_ckpt=S1 model.stage2_ckpt=S2
    svblur-eval experiment=synthetic_ssr_stage1 ckpt_path=S1    # one stage on its own
    svblur-train experiment=folder_ssr_stage1 data.root=/data/DIV2K   # HR photos, likewise 2

and in Python (e.g. a frozen condition for the diffusion stage)::

    svkr = load_svkr(S1, S2, iterations=3, gamma=0.9, freeze=True)
    out = svkr(lr, depth=batch["depth"])  # {"sr", "kernels", "depth", "sr_steps", ...}
    assemble_svkr(S1, S2, "svkr.ckpt", depth_estimator="svblur.models.HFDepth",
                  depth_kwargs={"path": "/models/dpt"})  # then: svblur-predict ckpt=svkr.ckpt
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanAbsoluteError, MeanMetric

from svblur.degradation import GaussianFieldBlur, KernelPCA, imresize
from svblur.errors import CheckpointError, InputError
from svblur.io import atomic_path
from svblur.metrics import KernelL1, kernel_l1
from svblur.metrics.sr import psnr_y, ssim_y
from svblur.models.checkpoints import (
    RECORD_KEY,
    build_network,
    check_fits,
    load_weights,
    network_record,
    read_checkpoint,
    read_state_dict,
)
from svblur.models.depth import DepthEstimator, GroundTruthDepth
from svblur.models.ssr import SVKR, ConstantDepth, Update, fit_kernel_pca

from .base import TrainingSystem
from .sr import NonBlindSRTask, kernels_on_grid

__all__ = [
    "KernelCodeSRTask",
    "KernelEstimationTask",
    "SVKRTask",
    "assemble_svkr",
    "evaluate_svkr",
    "load_svkr",
    "svkr_scores",
]

log = logging.getLogger(__name__)

DepthSource = Literal["hr", "lr"]


def _kernel_target(batch: Mapping[str, Any], taps: int, lr_size: tuple[int, int]) -> torch.Tensor:
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
        self.metrics = nn.ModuleDict({"val": self._new_metrics(), "test": self._new_metrics()})
        self.test_groups: list[str] = []

    @property
    def trains_depth(self) -> bool:
        """Whether the depth estimator has trainable parameters (and a depth loss)."""
        return any(p.requires_grad for p in self.depth_estimator.parameters())

    def _new_metrics(self) -> nn.ModuleDict:
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
        target = _kernel_target(batch, estimate.shape[1], lr_size)
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
        options = {
            "on_step": stage == "train",
            "on_epoch": True,
            "batch_size": batch["lr"].shape[0],
            "sync_dist": stage != "train",
            "add_dataloader_idx": False,
        }
        for name, term in terms.items():
            self.log(f"{stage}/loss/{name}", term.detach(), **options)
        self.log(f"{stage}/loss", loss.detach(), prog_bar=True, **options)
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
        group = self.test_groups[dataloader_idx] if self.test_groups else "test"
        _, outputs = self._step(batch, f"test/{group}" if self.test_groups else "test")
        self._update_metrics(group, outputs, batch)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_groups or ["test"])


class KernelCodeSRTask(NonBlindSRTask):
    """SSR stage 2: non-blind SR on the ground-truth kernel field's per-pixel PCA code.

    The network (an :class:`~svblur.models.RRDBSFT` with ``kernel_channels = n``) gets
    ``pca.encode(avg_pool(batch["kernels"]))``: the field averaged to the LR grid and
    encoded, exactly what :class:`~svblur.models.SVKR` gives it at inference
    (:meth:`SVKR.sr_condition <svblur.models.SVKR.sr_condition>`). The basis is fitted at
    construction from ``kernel_distribution`` (the degradation's
    :class:`~svblur.degradation.GaussianFieldBlur` settings, :func:`fit_kernel_pca`), or
    read from ``pca_path``; it lives in the buffers ``pca_mean``, ``pca_components`` and
    ``pca_explained``, so a checkpoint carries it and loading never refits. Loss and
    metrics: those of :class:`~svblur.systems.NonBlindSRTask` (L1, PSNR/SSIM-Y).

    Args:
        net: An :class:`~svblur.models.RRDBSFT` with ``kernel_channels`` set.
        kernel_distribution: ``GaussianFieldBlur`` arguments (``kernel_size``, ``model``,
            ``sigma_range``, ``sigma_cap``, ``aspect_range``, ``depth_guided``) the basis
            is fitted to.
        pca_path: A basis saved by :meth:`KernelPCA.save
            <svblur.degradation.KernelPCA.save>`, used instead of fitting.
        pca_kernels: Kernels drawn for the fit.
        pca_seed: Seed of that draw.
        **kwargs: See :class:`~svblur.systems.sr.SuperResolutionTask`.
    """

    def __init__(
        self,
        net: nn.Module,
        kernel_distribution: dict[str, Any] | None = None,
        pca_path: str | None = None,
        pca_kernels: int = 5000,
        pca_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        components = getattr(net, "kernel_channels", None)
        if components is None:
            raise InputError(
                "KernelCodeSRTask needs an RRDBSFT conditioned on kernel codes: set "
                "model.net.kernel_channels to the number of PCA components (MANet: 15)"
            )
        super().__init__(net, **kwargs)
        if pca_path:
            pca = KernelPCA.load(pca_path)
        elif kernel_distribution:
            blur = GaussianFieldBlur(**kernel_distribution)
            pca = fit_kernel_pca(blur, pca_kernels, int(components), pca_seed)
        else:
            raise InputError(
                "KernelCodeSRTask needs the kernel distribution to fit its PCA basis to "
                "(model.kernel_distribution, from degradation=gaussian_sv) or model.pca_path"
            )
        if pca.num_components != components:
            raise InputError(
                f"the PCA basis has {pca.num_components} components, the network takes "
                f"{components}: set model.net.kernel_channels={pca.num_components}"
            )
        pca.register_buffers(self)

    @property
    def pca(self) -> KernelPCA:
        """The kernel basis (from the buffers)."""
        return KernelPCA.from_buffers(self)

    def kernel_code(self, kernels: torch.Tensor, lr_size: tuple[int, int]) -> torch.Tensor:
        """The network's condition: ``(B, k*k, H, W)`` field -> ``(B, n, h, w)`` code."""
        target = _kernel_target({"kernels": kernels}, self.pca_mean.numel(), lr_size)
        return self.pca.encode(target)

    def predict_maps(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        lr = batch["lr"]
        if "kernels" not in batch:
            _kernel_target(batch, 0, (0, 0))  # raises the error that names the fix
        code = self.kernel_code(batch["kernels"], (lr.shape[-2], lr.shape[-1]))
        return {"sr": self.net(lr, kernels=code.to(lr.dtype))}

    def forward(self, lr: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """SR ``(B, 3, H, W)`` of ``lr`` given its kernel field ``(B, k*k, H, W)``."""
        return self.net(lr, kernels=self.kernel_code(kernels, (lr.shape[-2], lr.shape[-1])))


# ---------------------------------------------------------------------- assembling SVKR


def _stage_checkpoint(path: str | Path, system: str, stage: int) -> tuple[Mapping[str, Any], Any]:
    checkpoint = read_checkpoint(path)
    record = checkpoint.get(RECORD_KEY) if isinstance(checkpoint, Mapping) else None
    if not isinstance(record, Mapping) or record.get("system") != system:
        found = record.get("system") if isinstance(record, Mapping) else None
        raise CheckpointError(
            f"{path}: not an SSR stage-{stage} checkpoint ({system}, written by "
            f"experiment=synthetic_ssr_stage{stage}); it records {found!r}"
        )
    if not record.get("net"):
        raise CheckpointError(f"{path}: records no network config")
    return checkpoint, record


def _depth_config(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """How the stage-1 depth estimator is built, from the checkpoint's hyper-parameters.

    :class:`KernelEstimationTask` records the form of a
    :class:`~svblur.models.GroundTruthDepth`; one recorded without it was trained before
    the form existed, on per-image normalized depth (``form="minmax"``).
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    target = str(hparams.get("depth_estimator", "svblur.models.GroundTruthDepth"))
    kwargs = dict(hparams.get("depth_kwargs") or {})
    if target.rsplit(".", 1)[-1] == GroundTruthDepth.__name__ and "form" not in kwargs:
        kwargs["form"] = "minmax"
    return {"_target_": target, **kwargs}


def load_svkr(
    stage1_ckpt: str | Path,
    stage2_ckpt: str | Path,
    iterations: int = 3,
    gamma: float = 0.9,
    update: Update = "alg1",
    depth_estimator: DepthEstimator | None = None,
    freeze: bool = False,
) -> SVKR:
    """An :class:`~svblur.models.SVKR` from SSR's stage-1 and stage-2 checkpoints.

    The kernel estimator (DKENet) and its depth estimator come from the stage-1
    checkpoint (:class:`KernelEstimationTask`: the networks rebuilt from the recorded
    configs, their weights loaded strictly), the non-blind SR network and its kernel PCA
    basis from the stage-2 checkpoint (:class:`KernelCodeSRTask`); nothing is refitted.
    Files are read with ``weights_only=True``.

    Args:
        stage1_ckpt: Stage-1 checkpoint.
        stage2_ckpt: Stage-2 checkpoint.
        iterations: ``T`` (SSR: 3).
        gamma: Weight of the new kernel estimate (SSR: 0.9).
        update: ``"alg1"`` (SSR's Alg. 1) or ``"eq2"`` (see :class:`~svblur.models.SVKR`).
        depth_estimator: Replaces the stage-1 checkpoint's (e.g. a
            :class:`~svblur.models.HFDepth` at inference, where the data has no depth).
        freeze: Turn off gradients of every parameter and switch to eval mode (a frozen
            condition for a later stage; a LightningModule holding it must keep it in
            eval mode through ``train()`` calls).

    Returns:
        The SVKR, in eval mode.

    Raises:
        CheckpointError: A file is not the stage it is passed as.
        CheckpointMismatchError: Weights do not fit the recorded networks.
    """
    first, record1 = _stage_checkpoint(stage1_ckpt, "KernelEstimationTask", 1)
    second, record2 = _stage_checkpoint(stage2_ckpt, "KernelCodeSRTask", 2)
    state1, state2 = read_state_dict(first), read_state_dict(second)

    kernel_estimator = build_network(record1["net"])
    load_weights(kernel_estimator, {k: v for k, v in state1.items() if k.startswith("net.")})
    if depth_estimator is None:
        depth_estimator = build_network(_depth_config(first))
        prefix = "depth_estimator."
        depth_state = {k[len(prefix) :]: v for k, v in state1.items() if k.startswith(prefix)}
        check_fits(depth_estimator, depth_state, str(stage1_ckpt))
        depth_estimator.load_state_dict(depth_state, strict=True)

    sr_net = build_network(record2["net"])
    load_weights(sr_net, {k: v for k, v in state2.items() if k.startswith("net.")})
    missing = KernelPCA.buffers_missing(state2)
    if missing:
        raise CheckpointError(
            f"{stage2_ckpt}: holds no kernel PCA basis (missing {sorted(missing)})"
        )
    pca = KernelPCA.from_buffers(state2)

    svkr = SVKR(kernel_estimator, depth_estimator, sr_net, iterations, gamma, update, pca=pca)
    if freeze:
        svkr.requires_grad_(False)
    return svkr.eval()


def assemble_svkr(
    stage1_ckpt: str | Path,
    stage2_ckpt: str | Path,
    output: str | Path,
    iterations: int = 3,
    gamma: float = 0.9,
    update: Update = "alg1",
    depth_estimator: str | None = None,
    depth_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write the SVKR of :func:`load_svkr` as one checkpoint.

    The file holds the SVKR's state dict (``net.`` prefix: the networks and the PCA basis)
    and the record ``svblur-train`` writes (``checkpoint["svblur"]``: the network config,
    kind ``blind_sr``), so :func:`svblur.models.load_network` rebuilds it without the
    stage checkpoints and ``svblur-predict ckpt=FILE`` super-resolves photos with it.

    Args:
        stage1_ckpt: Stage-1 checkpoint.
        stage2_ckpt: Stage-2 checkpoint.
        output: The file to write.
        iterations: ``T``.
        gamma: Kernel blend weight.
        update: ``"alg1"`` or ``"eq2"``.
        depth_estimator: Class path of a depth estimator replacing the stage-1 one, with
            ``depth_kwargs`` (photos have no ground-truth depth: e.g.
            ``svblur.models.HFDepth`` with ``{"path": DIR}``, or
            ``svblur.models.ssr.ConstantDepth``); ``None``: the stage-1 checkpoint's.

    Returns:
        ``output`` as a path.
    """
    first, record1 = _stage_checkpoint(stage1_ckpt, "KernelEstimationTask", 1)
    _, record2 = _stage_checkpoint(stage2_ckpt, "KernelCodeSRTask", 2)
    depth_config = (
        _depth_config(first)
        if depth_estimator is None
        else {"_target_": depth_estimator, **(depth_kwargs or {})}
    )
    replacement = None if depth_estimator is None else build_network(depth_config)
    svkr = load_svkr(stage1_ckpt, stage2_ckpt, iterations, gamma, update, replacement)
    config = {
        "_target_": "svblur.models.SVKR",
        "kernel_estimator": dict(record1["net"]),
        "depth_estimator": depth_config,
        "sr_net": dict(record2["net"]),
        "iterations": int(iterations),
        "gamma": float(gamma),
        "update": update,
        "pca": int(svkr.pca_components.shape[0]),
    }
    record = {**network_record("assemble_svkr", config), "kind": "blind_sr"}
    state = {f"net.{k}": v for k, v in svkr.state_dict().items()}
    output = Path(output)
    with atomic_path(output) as temp:
        torch.save({"state_dict": state, RECORD_KEY: record}, temp)
    return output


def _without_depth(svkr: SVKR, kernel_estimator: nn.Module | None = None) -> SVKR:
    """The same SVKR (shared networks) with :class:`ConstantDepth` as depth estimator."""
    return SVKR(
        kernel_estimator or svkr.kernel_estimator,
        ConstantDepth(),
        svkr.sr_net,
        svkr.iterations,
        svkr.gamma,
        svkr.update,
        pca=svkr.pca,
        scale=svkr.scale,
    )


# ---------------------------------------------------------------------- evaluation


@torch.no_grad()
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
        no_depth = _without_depth(svkr)
    lr, hr = batch["lr"], batch["hr"].float()
    lr_size = (lr.shape[-2], lr.shape[-1])
    scores: dict[str, torch.Tensor] = {}
    for prefix, model in (("", svkr), ("no_depth/", no_depth)):
        out = model(lr, depth=batch.get("depth"))
        for t, (sr, kernels) in enumerate(zip(out["sr_steps"], out["kernel_steps"]), start=1):
            key = f"{prefix}t{t}"
            if "kernels" in batch:
                estimate = kernels_on_grid(kernels, lr_size)
                target = _kernel_target(batch, estimate.shape[1], lr_size)
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
        self.no_depth = _without_depth(self.net)
        if no_depth_stage1_ckpt:
            other = load_svkr(no_depth_stage1_ckpt, stage2_ckpt, iterations, gamma, update)
            self.no_depth = _without_depth(self.net, other.kernel_estimator)
        self.metrics = nn.ModuleDict({"test": self._new_metrics()})
        self.test_groups: list[str] = []

    def _metric_names(self) -> list[str]:
        names = []
        for prefix in ("", "no_depth/"):
            for t in range(1, self.hparams.iterations + 1):
                names += [f"{prefix}t{t}/{m}" for m in ("kernels/l1", "sr/psnr_y", "sr/ssim_y")]
        return names + ["kernels/l1", "sr/psnr_y", "sr/ssim_y"]

    def _new_metrics(self) -> nn.ModuleDict:
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
        group = self.test_groups[dataloader_idx] if self.test_groups else "test"
        scores = svkr_scores(
            self.net, batch, self.hparams.scale, self.hparams.quantize_metrics, self.no_depth
        )
        last = f"t{self.hparams.iterations}/"
        scores.update({k[len(last) :]: v for k, v in list(scores.items()) if k.startswith(last)})
        metrics = self.metrics[group]
        for name, values in scores.items():
            metrics[name].update(values.float())

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_groups or ["test"])
