"""PBaSR's Cross Fusion Module: adaptive weight interpolation between two branches.

PBaSR (Qin et al., ECCV 2024) trains two copies of one SR network, a general branch ``W_G``
and a blur branch ``W_B``, and every ``k`` iterations (20 in the paper) mixes them::

    W_G' = lam W_G + (1 - lam) W_B,    W_B' = lam W_B + (1 - lam) W_G.

The mix keeps ``W_G + W_B`` and scales ``W_G - W_B`` by ``2 lam - 1``. Inference uses
``(W_G + W_B) / 2``. Three rules for ``lam`` (``variant``), each with its own default
``lam0``:

- ``"paper"`` (Eq. 2), ``lam0 = 0.99``::

      lam = lam0 + (1 - lam0) cos(W_G, W_B) / 2,

  the cosine taken over all weights at once: the more alike the branches, the weaker the
  mix.
- ``"released_esrgan"``: ``ParallelNet_ncb.branch_weight_cross`` in
  ``basicsr/archs/parallel_arch.py`` of Imalne/PBaSR, the network of the RRDBNet (ESRGAN)
  anchor in ``options/test_PBaSR_ESRGAN.yml``: a constant ``lam = lam0``, ``lam0 = 0.999``
  (its ``decay``), no cosine. Its evaluation network ``combinet`` is
  ``0.5 W_G + 0.5 W_B``.
- ``"released_femasr"``: ``ParallelNet.branch_weight_cross`` in the same file, the network
  of the FeMaSR anchor, ``lam0 = 0.995`` (its default)::

      lam = lam0 + (1 - lam0) * mean_t cos(W_G[t], W_B[t]),

  the mean over parameter tensors ``t`` of each tensor's cosine
  (:func:`torch.nn.functional.cosine_similarity`, eps 1e-8), without the ``/ 2``. As
  released it cannot run: it appends an undefined name (``cos_dis_abs``, perhaps meant as
  the absolute value of the cosine) and raises ``NameError``; here the signed cosine is
  used. ``"released"`` is its former name, kept as a deprecated alias.

Both released rules iterate over ``named_parameters()``, frozen parameters included, in
the cosine and in the mix: ``trainable_only=False`` reproduces that. No rule mixes
buffers.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

__all__ = ["FUSION_LAMBDA0", "CrossBranchFusion", "cross_branch_fusion"]

log = logging.getLogger(__name__)

FusionVariant = Literal["paper", "released_esrgan", "released_femasr", "released"]
#: Each variant's default ``lam0``: the paper's, and the released code's defaults.
FUSION_LAMBDA0: Mapping[str, float] = MappingProxyType(
    {"paper": 0.99, "released_esrgan": 0.999, "released_femasr": 0.995}
)
#: Former variant names -> their names now.
_ALIASES = {"released": "released_femasr"}


def _check_settings(lambda0: float | None, variant: str) -> tuple[float, str]:
    """The ``(lam0, variant)`` to use: an alias resolved (with a deprecation warning) and
    ``lambda0=None`` replaced by the variant's default."""
    if variant in _ALIASES:
        message = (
            f"fusion variant {variant!r} is deprecated: it is now named "
            f"{_ALIASES[variant]!r} (the FeMaSR anchor's rule); the RRDBNet / ESRGAN anchor's "
            f"is 'released_esrgan'"
        )
        # DeprecationWarning is hidden by default outside __main__ (e.g. under Hydra's
        # instantiate): the log says it too.
        warnings.warn(message, DeprecationWarning, stacklevel=3)
        log.warning(message)
        variant = _ALIASES[variant]
    if variant not in FUSION_LAMBDA0:
        raise ValueError(f"variant must be one of {tuple(FUSION_LAMBDA0)}, got {variant!r}")
    lambda0 = FUSION_LAMBDA0[variant] if lambda0 is None else float(lambda0)
    if not 0.0 <= lambda0 <= 1.0:
        raise ValueError(f"lambda0 must be in [0, 1], got {lambda0}")
    return lambda0, variant


def _paired_parameters(
    general: nn.Module, blur: nn.Module, trainable_only: bool
) -> list[tuple[nn.Parameter, nn.Parameter]]:
    """The two branches' parameters, matched by name and checked for equal shapes."""
    ours, theirs = dict(general.named_parameters()), dict(blur.named_parameters())
    if ours.keys() != theirs.keys():
        only_general = sorted(ours.keys() - theirs.keys())[:5]
        only_blur = sorted(theirs.keys() - ours.keys())[:5]
        raise ValueError(
            "the two branches must be the same network: parameters only in general "
            f"{only_general}, only in blur {only_blur}"
        )
    pairs = []
    for name, g in ours.items():
        b = theirs[name]
        if g.shape != b.shape:
            raise ValueError(
                f"parameter {name} has shape {tuple(g.shape)} in general and "
                f"{tuple(b.shape)} in blur"
            )
        if trainable_only and g.requires_grad != b.requires_grad:
            raise ValueError(
                f"parameter {name} is trainable in one branch only (requires_grad "
                f"{g.requires_grad} in general, {b.requires_grad} in blur)"
            )
        if g.requires_grad or not trainable_only:
            pairs.append((g, b))
    if not pairs:
        raise ValueError("the branches have no trainable parameters to mix")
    return pairs


def _global_cosine(pairs: list[tuple[nn.Parameter, nn.Parameter]]) -> torch.Tensor:
    """Cosine between the concatenations of all tensors (float64; 0 for a zero branch)."""
    device = pairs[0][0].device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # <g, b>, |g|^2, |b|^2
    for g, b in pairs:
        g64, b64 = g.detach().reshape(-1).double(), b.detach().reshape(-1).double()
        sums += torch.stack([g64 @ b64, g64 @ g64, b64 @ b64]).to(device)
    norms = torch.sqrt(sums[1] * sums[2])
    return torch.where(norms > 0, sums[0] / torch.where(norms > 0, norms, 1.0), 0.0)


def _mean_tensor_cosine(pairs: list[tuple[nn.Parameter, nn.Parameter]]) -> torch.Tensor:
    """Mean over tensors of each tensor's cosine, as the released code (in float64)."""
    device = pairs[0][0].device
    cosines = [
        F.cosine_similarity(g.detach().reshape(-1).double(), b.detach().reshape(-1).double(), 0)
        for g, b in pairs
    ]
    return torch.stack([c.to(device) for c in cosines]).mean()


@torch.no_grad()
def cross_branch_fusion(
    general: nn.Module,
    blur: nn.Module,
    lambda0: float | None = None,
    variant: FusionVariant = "paper",
    *,
    trainable_only: bool = True,
) -> float:
    """Mix the parameters of two branches in place (PBaSR's CFM, see the module docstring).

    ``W_G' = lam W_G + (1 - lam) W_B`` and ``W_B' = lam W_B + (1 - lam) W_G`` for every pair
    of parameters matched by name; buffers are left alone. The cosine is computed in
    float64; the mix in the parameters' dtype.

    Args:
        general: The general branch ``W_G``.
        blur: The blur branch ``W_B``, the same architecture.
        lambda0: ``lam0``; ``None``: the variant's (:data:`FUSION_LAMBDA0`: 0.99 paper,
            0.999 released_esrgan, 0.995 released_femasr).
        variant: ``"paper"``: ``lam = lam0 + (1 - lam0) cos / 2`` with the cosine over all
            parameters concatenated; ``"released_esrgan"``: ``lam = lam0``;
            ``"released_femasr"``: ``lam = lam0 + (1 - lam0) cos`` with the mean of
            per-tensor cosines; ``"released"``: deprecated name of ``"released_femasr"``.
        trainable_only: Mix (and measure) only parameters with ``requires_grad``; ``False``
            takes every parameter, as the released code.

    Returns:
        ``lam``.

    Raises:
        ValueError: The branches' parameter names or shapes differ, a parameter is
            trainable in one branch only, or there is nothing to mix.
    """
    lambda0, variant = _check_settings(lambda0, variant)
    pairs = _paired_parameters(general, blur, trainable_only)
    if variant == "paper":
        lam = lambda0 + (1.0 - lambda0) * float(_global_cosine(pairs)) / 2.0
    elif variant == "released_esrgan":
        lam = lambda0
    else:
        lam = lambda0 + (1.0 - lambda0) * float(_mean_tensor_cosine(pairs))
    step = 1.0 - lam
    for g, b in pairs:
        difference = b - g
        g.add_(difference, alpha=step)
        b.sub_(difference, alpha=step)
    return lam


class CrossBranchFusion(Callback):
    """Call :func:`cross_branch_fusion` on two branches of the module every ``k`` iterations.

    An iteration is a training batch in which at least one optimizer stepped (the trainer's
    ``global_step`` moved): with one optimizer that is ``global_step``; with gradient
    accumulation the accumulating batches do not count; with manual optimization of
    several optimizers (generators and discriminators) one batch counts once, although
    ``global_step`` grows by the number of ``optimizer.step()`` calls. The mix happens at the
    end of every ``every_n_steps``-th iteration, so the next iteration trains the mixed
    weights. The count is saved in checkpoints, so a resumed run keeps the schedule.

    ``train/fusion_lambda`` is logged at every batch from the first fusion on, holding the
    ``lam`` of the most recent fusion, so that loggers see it whatever
    ``log_every_n_steps``. Optimizer states are not touched. Every rank mixes its own
    replica (the same numbers under DDP); sharded strategies (FSDP, DeepSpeed stage 3)
    are not supported.

    Args:
        every_n_steps: ``k`` (20 in the paper).
        lambda0: ``lam0``; ``None``: the variant's (0.99 in the paper).
        variant: ``"paper"``, ``"released_esrgan"`` or ``"released_femasr"`` (``"released"``
            is its deprecated name), see :func:`cross_branch_fusion`.
        general_attr: Attribute (dotted path allowed) of the LightningModule holding the
            general branch.
        blur_attr: Attribute of the LightningModule holding the blur branch.
        trainable_only: See :func:`cross_branch_fusion`.
    """

    def __init__(
        self,
        every_n_steps: int = 20,
        lambda0: float | None = None,
        variant: FusionVariant = "paper",
        general_attr: str = "general",
        blur_attr: str = "blur",
        trainable_only: bool = True,
    ) -> None:
        super().__init__()
        if int(every_n_steps) != every_n_steps or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive integer, got {every_n_steps}")
        self.lambda0, self.variant = _check_settings(lambda0, variant)
        self.every_n_steps = int(every_n_steps)
        self.general_attr = general_attr
        self.blur_attr = blur_attr
        self.trainable_only = trainable_only
        self.iterations = 0
        self.last_lambda: float | None = None
        self._step_at_batch_start: int | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            every_n_steps=self.every_n_steps,
            general_attr=self.general_attr,
            blur_attr=self.blur_attr,
        )

    def _branches(self, pl_module: LightningModule) -> tuple[nn.Module, nn.Module]:
        branches = []
        for attr in (self.general_attr, self.blur_attr):
            try:
                branch = attrgetter(attr)(pl_module)
            except AttributeError:
                branch = None
            if not isinstance(branch, nn.Module):
                raise AttributeError(
                    f"CrossBranchFusion: {type(pl_module).__name__}.{attr} is not a network; "
                    f"set general_attr / blur_attr to the attributes holding the two branches"
                )
            branches.append(branch)
        return branches[0], branches[1]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._branches(pl_module)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        stepped = self._step_at_batch_start is not None and (
            trainer.global_step != self._step_at_batch_start
        )
        if stepped:
            self.iterations += 1
            if self.iterations % self.every_n_steps == 0:
                general, blur = self._branches(pl_module)
                self.last_lambda = cross_branch_fusion(
                    general, blur, self.lambda0, self.variant, trainable_only=self.trainable_only
                )
        if self.last_lambda is not None:
            pl_module.log(
                "train/fusion_lambda", self.last_lambda, on_step=True, on_epoch=False, batch_size=1
            )

    def state_dict(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "last_lambda": self.last_lambda}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.iterations = int(state_dict["iterations"])
        self.last_lambda = state_dict.get("last_lambda")
