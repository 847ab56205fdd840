"""The multi-task loss of CMOS (stage 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svblur.metrics import IGNORE_INDEX, kernel_l1


class BlurSemanticsLoss(nn.Module):
    """``aux_weight * (L1(aux_blur) + CE(aux_seg)) + L1(blur) + CE(seg) + kernel L1``.

    Terms are added for the tasks present in both the network output and the batch (a
    batch without labels, e.g. a folder of photos, trains the blur head alone); the cross
    entropy ignores ``ignore_index``; kernel fields (``kernels``, MANet's kernel head)
    are compared with :func:`svblur.metrics.kernel_l1` (mean over the batch). Losses are computed in float32 whatever the
    autocast precision.

    Args:
        aux_weight: Weight of the auxiliary terms (0.5 in CMOS).
        use_aux: Whether auxiliary outputs, when present, are supervised.
        ignore_index: Label excluded from the cross entropy.
    """

    def __init__(
        self, aux_weight: float = 0.5, use_aux: bool = True, ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__()
        self.aux_weight = aux_weight
        self.use_aux = use_aux
        self.ignore_index = ignore_index

    def forward(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Return each term (keys ``blur``, ``seg``, ``aux_blur``, ``aux_seg``,
        ``kernels``) and ``total``.

        Args:
            outputs: Network outputs; ``blur`` ``(B, 1, H, W)``, ``seg`` ``(B, K, H, W)``,
                ``kernels`` ``(B, k*k, H, W)``.
            batch: Targets; ``blur`` ``(B, 1, H, W)``, ``seg`` ``(B, H, W)`` int64,
                ``kernels`` ``(B, k*k, H, W)``.
        """
        supervised = [k for k in ("blur", "seg", "kernels") if k in outputs and k in batch]
        if not supervised:
            raise KeyError(
                f"no network output has a target in the batch: outputs {sorted(outputs)}, "
                f"batch {sorted(batch)}; choose a model that predicts what the degradation "
                "provides (e.g. model=manet_kernel for kernel fields)"
            )
        terms: dict[str, torch.Tensor] = {}
        for prefix, weight in (("", 1.0), ("aux_", self.aux_weight)):
            if prefix and not self.use_aux:
                continue
            if prefix + "blur" in outputs and "blur" in batch:
                pred = outputs[prefix + "blur"].float()
                self._check_shape(prefix + "blur", pred, batch["blur"])
                terms[prefix + "blur"] = weight * F.l1_loss(pred, batch["blur"].float())
            if prefix + "seg" in outputs and "seg" in batch:
                logits = outputs[prefix + "seg"].float()
                self._check_shape(prefix + "seg", logits[:, 0], batch["seg"])
                # Mean over labelled pixels; 0 (not NaN) for a batch with none (e.g. the
                # built-in data's real crops carry no labels).
                ce = F.cross_entropy(
                    logits, batch["seg"], ignore_index=self.ignore_index, reduction="sum"
                )
                labelled = (batch["seg"] != self.ignore_index).sum().clamp(min=1)
                terms[prefix + "seg"] = weight * ce / labelled
        if "kernels" in supervised:
            self._check_shape("kernels", outputs["kernels"], batch["kernels"])
            terms["kernels"] = kernel_l1(outputs["kernels"], batch["kernels"]).mean()
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    @staticmethod
    def _check_shape(name: str, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape[-2:] != target.shape[-2:] or pred.shape[0] != target.shape[0]:
            raise ValueError(
                f"output '{name}' has shape {tuple(pred.shape)} but its target has "
                f"{tuple(target.shape)}: the network must predict at HR size"
            )
