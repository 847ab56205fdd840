"""The SVKR that SSR's stages 1 and 2 make up: :func:`load_svkr` rebuilds it from the two
checkpoints, :func:`assemble_svkr` writes it as one checkpoint that
:func:`svblur.checkpoints.load_network` and ``svblur-predict`` read."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from svblur.checkpoints import (
    RECORD_KEY,
    build_network,
    check_fits,
    load_weights,
    network_record,
    read_checkpoint,
    read_state_dict,
)
from svblur.degradation import KernelPCA
from svblur.errors import CheckpointError
from svblur.io import atomic_path
from svblur.models.depth import DepthEstimator, GroundTruthDepth
from svblur.models.ssr import SVKR, ConstantDepth, Update

__all__ = ["assemble_svkr", "load_svkr", "without_depth"]

log = logging.getLogger(__name__)


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
    kind ``blind_sr``), so :func:`svblur.checkpoints.load_network` rebuilds it without the
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
    record = network_record("assemble_svkr", config, "blind_sr")
    state = {f"net.{k}": v for k, v in svkr.state_dict().items()}
    output = Path(output)
    with atomic_path(output) as temp:
        torch.save({"state_dict": state, RECORD_KEY: record}, temp)
    return output


def without_depth(svkr: SVKR, kernel_estimator: nn.Module | None = None) -> SVKR:
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
