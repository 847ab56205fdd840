"""Blind SR: a blur/semantics estimator (CMOS) feeding a non-blind SR network (RRDB-SFT)."""

from __future__ import annotations

import torch
from torch import nn

from .rrdb_sft import RRDBSFT

__all__ = ["BlindSR"]


class BlindSR(nn.Module):
    """Estimate blur and semantics from the LR image, then super-resolve with them.

    The estimator maps ``lr`` to a dict with ``blur`` ``(B, 1, H, W)`` (sigma in HR pixels)
    and ``seg`` ``(B, K, H, W)`` (logits) at HR size, like :class:`~svblur.models.CMOS`. The
    semantic input of the SR network follows its ``seg_encoding``: the argmax class map for
    ``index``/``onehot``, the softmax probabilities for ``probs``, nothing for ``none``.

    With ``freeze_estimator=True`` (stage 3 of CMOS) the estimator is frozen for real: its
    parameters do not require gradients, it runs without autograd, and it stays in eval
    mode whatever ``train()`` calls reach it (so its BatchNorm statistics never move).

    Args:
        estimator: Blur + semantics network (``lr -> {"blur", "seg", ...}``).
        sr: The non-blind SR network.
        freeze_estimator: Freeze the estimator as described above.

    With an SR network conditioned on kernels (``RRDBSFT(kernel_channels=k*k)``) the
    estimator's ``kernels`` field feeds it instead (MANet's blind SR).

    Shape:
        ``lr (B, 3, h, w)`` in ``[0, 1]`` -> dict with ``sr (B, 3, H, W)``, ``blur
        (B, 1, H, W)``, ``seg (B, K, H, W)`` logits (and any other estimator outputs).
    """

    def __init__(self, estimator: nn.Module, sr: RRDBSFT, freeze_estimator: bool = True) -> None:
        super().__init__()
        self.estimator = estimator
        self.sr = sr
        self.freeze_estimator = freeze_estimator
        if freeze_estimator:
            self.estimator.requires_grad_(False)
            self.estimator.eval()

    @property
    def scale(self) -> int:
        """The SR factor (the SR network's)."""
        return int(self.sr.scale)

    def train(self, mode: bool = True) -> BlindSR:
        """Set training mode; a frozen estimator stays in eval mode."""
        super().train(mode)
        if self.freeze_estimator:
            self.estimator.eval()
        return self

    def estimate(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the estimator (without autograd when frozen)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_estimator):
            return self.estimator(lr)

    def sr_seg_input(self, seg_logits: torch.Tensor) -> torch.Tensor | None:
        """The SR network's semantic input made from the estimator's logits."""
        encoding = self.sr.seg_encoding
        if encoding == "none":
            return None
        if encoding == "probs":
            return seg_logits.float().softmax(1)
        return seg_logits.argmax(1)

    def forward(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the estimator's outputs plus ``sr``."""
        estimates = self.estimate(lr)
        if self.sr.kernel_channels is not None:  # a kernel estimator (MANet's kernel head)
            if "kernels" not in estimates:
                raise KeyError(
                    f"the SR network takes kernels, the estimator returned {sorted(estimates)}; "
                    "use an estimator with a kernel head (MANet(output='kernels'))"
                )
            return {**estimates, "sr": self.sr(lr, kernels=estimates["kernels"].float())}
        needs_seg = self.sr.seg_encoding != "none"
        if "blur" not in estimates or (needs_seg and "seg" not in estimates):
            raise KeyError(
                f"the estimator must return 'blur' and 'seg', got {sorted(estimates)}; use a "
                "two-task CMOS (tasks=[blur, seg]), or a blur-only estimator (e.g. MANet) "
                "with an RRDB-SFT of seg_encoding='none'"
            )
        blur = estimates["blur"].float()
        seg = self.sr_seg_input(estimates["seg"]) if needs_seg else None
        sr = self.sr(lr, blur, seg)
        return {**estimates, "sr": sr}
