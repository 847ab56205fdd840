"""The multi-task loss of CMOS (stage 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svblur.metrics import IGNORE_INDEX


class BlurSemanticsLoss(nn.Module):
    """``aux_weight * (L1(aux_blur) + CE(aux_seg)) + L1(blur) + CE(seg)``.

    Terms are added for the tasks present in the network output; the cross
    entropy ignores ``ignore_index``. Losses are computed in float32 whatever the
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
        """Return each term (keys ``blur``, ``seg``, ``aux_blur``, ``aux_seg``) and ``total``.

        Args:
            outputs: Network outputs; ``blur`` ``(B, 1, H, W)``, ``seg`` ``(B, K, H, W)``.
            batch: Targets; ``blur`` ``(B, 1, H, W)``, ``seg`` ``(B, H, W)`` int64.
        """
        if not any(k in outputs for k in ("blur", "seg")):
            raise KeyError(f"network outputs hold neither 'blur' nor 'seg': {sorted(outputs)}")
        terms: dict[str, torch.Tensor] = {}
        for prefix, weight in (("", 1.0), ("aux_", self.aux_weight)):
            if prefix and not self.use_aux:
                continue
            if prefix + "blur" in outputs:
                pred = outputs[prefix + "blur"].float()
                self._check_shape(prefix + "blur", pred, batch["blur"])
                terms[prefix + "blur"] = weight * F.l1_loss(pred, batch["blur"].float())
            if prefix + "seg" in outputs:
                logits = outputs[prefix + "seg"].float()
                self._check_shape(prefix + "seg", logits[:, 0], batch["seg"])
                # Mean over labelled pixels; 0 (not NaN) for a batch with none (e.g. the
                # built-in data's real crops carry no labels).
                ce = F.cross_entropy(
                    logits, batch["seg"], ignore_index=self.ignore_index, reduction="sum"
                )
                labelled = (batch["seg"] != self.ignore_index).sum().clamp(min=1)
                terms[prefix + "seg"] = weight * ce / labelled
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    @staticmethod
    def _check_shape(name: str, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape[-2:] != target.shape[-2:] or pred.shape[0] != target.shape[0]:
            raise ValueError(
                f"output '{name}' has shape {tuple(pred.shape)} but its target has "
                f"{tuple(target.shape)}: the network must predict at HR size"
            )
