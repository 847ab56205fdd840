"""Stage 3 of SSR: the diffusion SR with AMF, conditioned on kernels and depth.

:class:`DiffusionSRTask` trains either network with SSR's Eq. 5, the noise-prediction MSE
plus the AMF sparsity term ``sum_i lambda_i mean|f_i|`` (:func:`svblur.nn.amf_sparsity`):

- :class:`~svblur.models.LatentDiffusionSR` (``model=latent_diffusion_sr``), the paper's
  method: the loss is computed in the latent space of a frozen, pretrained Stable
  Diffusion; only the condition encoders, the AMFs and the injections train (the UNet and
  the VAE are frozen and left out of the optimizer);
- :class:`~svblur.models.DiffusionSR` (``model=diffusion_sr``), the small pixel-space
  model trained from scratch, for CPU smoke runs.

The numbers of trainable and frozen parameters are logged at the start of training. The
target is the noise, or the velocity for a ``v_prediction`` schedule. The kernels and
depth the network is conditioned on come from

- ``condition="svkr"``: the network's :class:`~svblur.models.SVKR`, loaded at the start of
  training from the stage-1/2 checkpoints (or one SVKR state dict) and **frozen**: no
  gradients, eval mode kept through Lightning's ``train()`` calls, left out of the
  optimizer (as the CMOS blind-SR stage freezes its estimator);
- ``condition="ground_truth"``: an **oracle**, the batch's own (true) kernel field and
  depth (``degradation=gaussian_sv``), which no photo has; it lets the stage train without
  stages 1 and 2.

Validation and test sample the SR image as ``sampling`` says (few steps, a fixed seed) and
log ``sr/psnr_y`` and ``sr/ssim_y`` (crop ``scale``, :mod:`svblur.metrics.sr`), plus
``kernels/l1`` of SVKR's kernels when they are estimated. The logged ``{stage}/loss`` is
Eq. 5 on fixed noise outside training, so it can be monitored for checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from svblur.checkpoints import check_fits, load_weights, read_state_dict
from svblur.degradation import KernelPCA
from svblur.errors import InputError
from svblur.models.depth import GroundTruthDepth
from svblur.models.diffusion_sr import MODALITIES, DiffusionSR
from svblur.models.latent_diffusion_sr import LatentDiffusionSR
from svblur.nn import amf_sparsity

from .sr import SuperResolutionTask

__all__ = ["SAMPLING_DEFAULTS", "DiffusionSRTask"]

log = logging.getLogger(__name__)

#: Sampling options of validation, test and ``svblur-predict`` (``DiffusionSR.sample``).
SAMPLING_DEFAULTS: dict[str, Any] = {
    "steps": 5,
    "sampler": None,
    "seed": 0,
    "tile_size": None,
    "tile_overlap": 8,
}


class DiffusionSRTask(SuperResolutionTask):
    """SSR stage 3: train a :class:`~svblur.models.LatentDiffusionSR` or a
    :class:`~svblur.models.DiffusionSR` by Eq. 5 (see the module docstring).

    Stage checkpoints (read with ``weights_only=True``, loaded strictly at the start of
    training, not when resuming; only with ``condition="svkr"``):

    - ``svkr_ckpt``: a whole SVKR (its state dict, or a Lightning checkpoint whose
      ``net.`` holds one); or
    - ``kernel_estimator_ckpt`` (stage 1: DKENet under ``net.``, and a trainable depth
      estimator under ``depth_estimator.`` when the SVKR's has parameters) and ``sr_ckpt``
      (stage 2: RRDB-SFT under ``net.``, the kernel PCA basis as ``pca_*`` when the SVKR
      uses one); ``depth_ckpt`` optionally gives the depth estimator separately.

    Args:
        net: The diffusion network.
        condition: ``svkr`` or ``ground_truth`` (the oracle); must equal ``net.condition``.
        sparsity_weights: ``lambda_i`` by modality (``kernel``, ``depth``, ``lr``); SSR
            does not give them.
        sampling: Sampling at validation and test (and the defaults of
            ``svblur-predict``): ``steps``, ``sampler`` (``None``: the network's),
            ``seed`` (the same for every batch; also seeds the noise of the evaluation
            loss), ``tile_size`` and ``tile_overlap`` in LR pixels (``None``: no tiles;
            a ``None`` entry takes the default of :data:`SAMPLING_DEFAULTS`), see
            :meth:`LatentDiffusionSR.sample <svblur.models.LatentDiffusionSR.sample>`
            and :meth:`DiffusionSR.sample <svblur.models.DiffusionSR.sample>`.
        noise_seed: Seed of the training noise and timesteps (offset by the process rank).
        svkr_ckpt: See above.
        kernel_estimator_ckpt: See above.
        sr_ckpt: See above.
        depth_ckpt: See above.
        **kwargs: See :class:`~svblur.systems.sr.SuperResolutionTask`.
    """

    kind = "diffusion_sr"

    def __init__(
        self,
        net: DiffusionSR | LatentDiffusionSR,
        condition: str = "ground_truth",
        sparsity_weights: Mapping[str, float] | None = None,
        sampling: Mapping[str, Any] | None = None,
        noise_seed: int = 0,
        svkr_ckpt: str | None = None,
        kernel_estimator_ckpt: str | None = None,
        sr_ckpt: str | None = None,
        depth_ckpt: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(net, (DiffusionSR, LatentDiffusionSR)):
            raise TypeError(
                "DiffusionSRTask needs a svblur.models.LatentDiffusionSR or DiffusionSR, got "
                f"{type(net).__name__}"
            )
        if condition != net.condition:
            raise ValueError(
                f"model.condition={condition!r} but the network was built with "
                f"condition={net.condition!r}; set model.net.condition: ${{model.condition}}"
            )
        weights = dict(sparsity_weights or {})
        unknown = sorted(set(weights) - set(MODALITIES))
        if unknown or any(float(v) < 0 for v in weights.values()):
            raise ValueError(
                f"sparsity_weights: expected non-negative weights for {list(MODALITIES)}, got "
                f"{weights}"
            )
        options = dict(sampling or {})
        unknown = sorted(set(options) - set(SAMPLING_DEFAULTS))
        if unknown:
            raise ValueError(
                f"sampling: unknown keys {unknown}; expected {sorted(SAMPLING_DEFAULTS)}"
            )
        super().__init__(net, **kwargs)
        self.sampling = {**SAMPLING_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
        self._noise: torch.Generator | None = None

    @property
    def diffusion(self) -> DiffusionSR | LatentDiffusionSR:
        return self.net  # type: ignore[return-value]

    @property
    def estimates_kernels(self) -> bool:
        return self.net.condition == "svkr"

    def _frozen_modules(self) -> list[nn.Module]:
        net = self.diffusion
        if isinstance(net, LatentDiffusionSR):
            return net.frozen_modules()
        frozen = [net.vae] if net.vae is not None else []
        if net.estimator is not None and net.freeze_estimator:
            frozen.append(net.estimator)
        return frozen

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What trains: the encoders', the AMFs' and the injections' (latent model) or the
        denoiser's too (pixel model); never a pretrained UNet's, a VAE's or a frozen SVKR's."""
        frozen = {id(p) for module in self._frozen_modules() for p in module.parameters()}
        return [p for p in self.net.parameters() if p.requires_grad and id(p) not in frozen]

    def record(self) -> dict[str, Any]:
        """The checkpoint record. A :class:`~svblur.models.LatentDiffusionSR`'s config
        names its local pretrained folder (absolute, also when it came from the hub) as
        ``pretrained``, which :func:`~svblur.checkpoints.load_network` keeps (it keeps a
        ``pretrained`` that is an existing local directory): the frozen UNet and VAE are
        re-read from that folder, everything else (encoders, AMFs, injections, prompt
        embedding, SVKR) from the checkpoint."""
        record = super().record()
        if isinstance(self.net, LatentDiffusionSR) and isinstance(record.get("net"), dict):
            net = {k: v for k, v in record["net"].items() if k != "pretrained_folder"}
            net.update(pretrained=self.net.pretrained_folder, allow_download=False)
            record["net"] = net
        return record

    def parameter_counts(self) -> dict[str, int]:
        """``{"trainable": ..., "frozen": ...}``: the network's parameters the optimizer
        gets, and the others."""
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = sum(p.numel() for p in self.net.parameters())
        return {"trainable": trainable, "frozen": total - trainable}

    def on_fit_start(self) -> None:
        counts = self.parameter_counts()
        log.info(
            "%s: %s trainable parameters, %s frozen",
            type(self.net).__name__,
            f"{counts['trainable']:,}",
            f"{counts['frozen']:,}",
        )

    # ------------------------------------------------------------------ stage checkpoints
    def load_stage_checkpoints(self) -> None:
        """Load the SVKR's weights from the stage checkpoints (see the class docstring)."""
        svkr = self.diffusion.estimator
        if svkr is None:
            return
        hp = self.hparams
        if hp.get("svkr_ckpt"):
            load_weights(svkr, Path(hp.svkr_ckpt))
            log.info("Loaded the SVKR from %s", hp.svkr_ckpt)
        else:
            missing = [k for k in ("kernel_estimator_ckpt", "sr_ckpt") if not hp.get(k)]
            if missing:
                raise ValueError(
                    f"model.condition=svkr: {', '.join('model.' + k for k in missing)} not set. "
                    "Stage 3 conditions on a trained SVKR: pass model.svkr_ckpt=FILE, or "
                    "model.kernel_estimator_ckpt=STAGE1.ckpt and model.sr_ckpt=STAGE2.ckpt; "
                    "or train on the data's own kernels and depth with "
                    "model.condition=ground_truth"
                )
            first = read_state_dict(Path(hp.kernel_estimator_ckpt))
            load_weights(svkr.kernel_estimator, _part(first, "net."))
            second = read_state_dict(Path(hp.sr_ckpt))
            load_weights(svkr.sr_net, _part(second, "net."))
            if getattr(svkr, "pca_components", None) is not None:
                absent = KernelPCA.buffers_missing(second)
                if absent:
                    raise InputError(
                        f"{hp.sr_ckpt}: holds no kernel PCA basis (missing {absent}) but the "
                        "SVKR uses one; set model.net.estimator.pca=null or pass a stage-2 "
                        "checkpoint trained on the PCA code"
                    )
                for key in KernelPCA.BUFFERS:
                    buffer = getattr(svkr, key)
                    if buffer.shape != second[key].shape:
                        raise InputError(
                            f"{hp.sr_ckpt}: kernel PCA {key} has shape "
                            f"{tuple(second[key].shape)}, the SVKR's {tuple(buffer.shape)}"
                        )
                    buffer.copy_(second[key])
            depth_params = list(svkr.depth_estimator.state_dict())
            if hp.get("depth_ckpt"):
                load_weights(svkr.depth_estimator, Path(hp.depth_ckpt))
            elif depth_params:
                depth_state = _part(first, "depth_estimator.")
                check_fits(svkr.depth_estimator, depth_state, str(hp.kernel_estimator_ckpt))
                svkr.depth_estimator.load_state_dict(depth_state, strict=True)
            log.info("Loaded the SVKR from %s and %s", hp.kernel_estimator_ckpt, hp.sr_ckpt)
        if self.diffusion.freeze_estimator:
            svkr.requires_grad_(False)
            svkr.eval()

    def setup(self, stage: str) -> None:
        if stage == "fit" and getattr(self.trainer, "ckpt_path", None) is None:
            self.load_stage_checkpoints()
        super().setup(stage)

    # ------------------------------------------------------------------ conditions and loss
    def conditions(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Kernel field ``(B, k*k, H, W)`` and depth ``(B, 1, H, W)`` of a batch.

        ``svkr``: what the SVKR estimates, its depth in the form its stage-1 depth
        estimator gives (the batch's depth goes to it, for a
        :class:`~svblur.models.GroundTruthDepth`). ``ground_truth``: the batch's kernels
        and its depth as :class:`~svblur.models.GroundTruthDepth` gives it by default
        (the signed defocus about the camera model's focus), the form a stage 1 on the
        data's depth trains DKENet with.
        """
        if self.net.condition == "svkr":
            return self.diffusion.estimate_conditions(batch["lr"], depth=batch.get("depth"))
        missing = [key for key in ("kernels", "depth") if key not in batch]
        if missing:
            raise InputError(
                f"model.condition=ground_truth needs the data's {' and '.join(missing)}: use "
                "degradation=gaussian_sv on data with depth (data=synthetic), or "
                "model.condition=svkr"
            )
        depth = GroundTruthDepth()(batch["hr"], depth=batch["depth"])
        return {"kernels": batch["kernels"], "depth": depth}

    def _generator(self) -> torch.Generator:
        if self._noise is None or self._noise.device != self.device:
            rank = self.trainer.global_rank if self._trainer is not None else 0
            seed = int(self.hparams.noise_seed) + 1_000_003 * rank + self.global_step
            self._noise = torch.Generator(self.device).manual_seed(seed)
        return self._noise

    def diffusion_loss(
        self,
        batch: Mapping[str, torch.Tensor],
        conditions: Mapping[str, torch.Tensor],
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """Eq. 5's terms: ``epsilon`` (MSE to the noise, or to the velocity for a
        ``v_prediction`` schedule) and ``sparsity`` (weighted AMF L1).

        ``generator`` draws the timesteps and the noise on its device.
        """
        net = self.diffusion
        x0 = net.encode_image(batch["hr"])
        device = generator.device
        noise = torch.randn(x0.shape, generator=generator, device=device).to(x0)
        steps = net.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (x0.shape[0],), generator=generator, device=device)
        timesteps = timesteps.to(x0.device)
        noisy = net.noise_scheduler.add_noise(x0, noise, timesteps)
        out = net(noisy, timesteps, batch["lr"], conditions["depth"], conditions["kernels"])
        target = noise
        if net.noise_scheduler.config.prediction_type == "v_prediction":
            target = net.noise_scheduler.get_velocity(x0, noise, timesteps)
        return {
            "epsilon": F.mse_loss(out["epsilon"].float(), target.float()),
            "sparsity": amf_sparsity(out["features"], self.hparams.sparsity_weights or {}),
        }

    def calibration_forward(self, batch: dict[str, torch.Tensor]) -> None:
        """The training forward (noise prediction at random timesteps, fixed seed): the
        AMFs' BatchNorms see what they see in training, and no sampling runs."""
        # seeded by the batch, so that the calibration batches see different timesteps
        content = int(batch["lr"].double().sum().mul(1e6).item()) % 2**31
        generator = torch.Generator("cpu").manual_seed(int(self.sampling["seed"]) + content)
        self.diffusion_loss(batch, self.conditions(batch), generator)

    def _step(
        self, batch: dict[str, torch.Tensor], stage: str, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        conditions = self.conditions(batch)
        if stage == "train":
            generator = self._generator()
        else:  # fixed noise: comparable losses between epochs
            generator = torch.Generator("cpu").manual_seed(int(self.sampling["seed"]))
        terms = self.diffusion_loss(batch, conditions, generator)
        loss = terms["epsilon"] + terms["sparsity"]
        batch_size = int(keep.sum()) if keep is not None else batch["lr"].shape[0]
        self._log_terms(stage, terms, batch_size, loss)
        if stage == "train":
            return loss, {}
        return loss, self._sample(batch, conditions)

    def _sample(
        self, batch: Mapping[str, torch.Tensor], conditions: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        sr = self.diffusion.sample(
            batch["lr"], conditions["depth"], conditions["kernels"], **self.sampling
        )
        return {"sr": sr, "kernels": conditions["kernels"]}

    def predict_maps(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The SR image sampled as at validation, and the kernels it was conditioned on."""
        return self._sample(batch, self.conditions(batch))

    def forward(self, lr: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Sample SR images (the network's ``sample``)."""
        return self.diffusion.sample(lr, **kwargs)


def _part(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix`` (stripped), or the whole state when none are."""
    part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return part or dict(state)
