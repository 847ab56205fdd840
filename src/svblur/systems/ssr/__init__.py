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
  as one checkpoint that :func:`svblur.checkpoints.load_network` and ``svblur-predict`` read.
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

from .assembly import assemble_svkr, load_svkr
from .evaluation import SVKRTask, evaluate_svkr, svkr_scores
from .stage1 import KernelEstimationTask
from .stage2 import KernelCodeSRTask

__all__ = [
    "KernelCodeSRTask",
    "KernelEstimationTask",
    "SVKRTask",
    "assemble_svkr",
    "evaluate_svkr",
    "load_svkr",
    "svkr_scores",
]
