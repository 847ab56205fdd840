"""GAN-trained SR: what the GAN systems share (:class:`GANSystem`) and one generator
against one discriminator (:class:`GANSRTask`).

Real-ESRGAN's objective, ``l1_weight * L1 + perceptual_weight * VGG19 + gan_weight * GAN``,
with manual optimization (a generator step, then a discriminator step). The GAN loss is
``gan_kind``: ``"vanilla"`` (Real-ESRGAN's) or ``"hinge"`` (PBaSR's Eq. 1). A branch
trained on partially blurred data has a discriminator conditioned on ``blur_mask``
(:class:`~svblur.models.ConditionalUNetDiscriminatorSN`); ``blur_gan_region`` says over
what its adversarial terms (the generator's and the discriminator's) are averaged:
``"all"``, the whole image (PBaSR's Eq. 1), or ``"blurred"``, the blurred region only
(``GANLoss(..., mask=blur_mask)``: a patch with no blurred pixel then gets no adversarial
signal).

A fine-tuning starts from a pretrained GAN: the generators from ``anchor_ckpt``, the
discriminators from ``anchor_discriminator_ckpt`` (a plain discriminator state dict or a
:class:`GANSRTask` checkpoint; a conditional discriminator takes its image path and keeps
its condition path at init, so it starts equal to the anchor's whatever the mask).

Metrics (validation and test): ``eval_metrics`` (PSNR / SSIM on Y, GMSD, VIF, VSI) and
piq's LPIPS and DISTS (``perceptual_metrics``), each on the whole image and on its blurred
and sharp regions of ``blur_mask`` (:class:`~svblur.metrics.RegionMetrics`, whose
docstring defines a learned metric over a region), logged as
``{stage}/[<group>/]sr/<region>/<metric>``. Each test group of the data (a
:class:`~svblur.data.CombinedDataModule`: ``general``, ``blur`` or ReBlurSR's ``defocus``
and ``motion``) is logged apart, their mean as ``test/sr/...``; a batch without
``blur_mask`` (general data) is scored on ``all`` only. LPIPS and DISTS come from weight
files already on this machine (:func:`~svblur.metrics.local_perceptual_metrics`: the
``perceptual_weights_dir`` hyperparameter, then the torch hub cache), never downloaded:
by default (``perceptual_metrics=None``) each is computed when its files are found and
otherwise skipped with one log line naming the missing files; a list asks for those
metrics, and a missing file is then an :class:`~svblur.errors.InputError` when the system
is built (``[]``: none).
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

from svblur.checkpoints import (
    check_fits,
    from_basicsr_rrdbnet,
    load_weights,
    read_state_dict,
    save_state_dict,
)
from svblur.metrics import RegionMetrics, local_perceptual_metrics
from svblur.models.discriminators import ConditionalUNetDiscriminatorSN

from .base import TrainingSystem
from .gan_losses import GANLoss

__all__ = ["BLUR_GAN_REGIONS", "EVAL_METRICS", "GANSRTask", "GANSystem"]

log = logging.getLogger(__name__)

#: The metrics of the evaluation loops (all three regions each).
EVAL_METRICS: tuple[str, ...] = ("psnr_y", "ssim_y", "gmsd", "vif", "vsi")
#: Key prefixes of a conditional discriminator's condition path (not in a plain one).
CONDITION_PATH: tuple[str, ...] = ("condition_conv.", "fuse.")
#: Where a conditional discriminator's adversarial terms are averaged: the whole image
#: (PBaSR's Eq. 1) or the blurred region (``blur_mask`` 1).
BLUR_GAN_REGIONS: tuple[str, ...] = ("all", "blurred")


class GANSystem(TrainingSystem):
    """What the GAN systems share: the losses, one branch's step, evaluation of one
    generator by region, the anchor weights and the export.

    Subclasses name their generators and discriminators in :attr:`branches`, call
    :meth:`_init_shared` in ``__init__`` and write the training step (manual optimization:
    :meth:`_branch_step` per branch).
    """

    kind = "gan_sr"
    #: Generators as ``(attribute, discriminator attribute)``; set by the subclasses.
    branches: tuple[tuple[str, str], ...] = ()

    def _init_shared(
        self,
        perceptual: nn.Module | None,
        g_optimizer: Callable[..., Optimizer],
        d_optimizer: Callable[..., Optimizer],
        gan_kind: str,
        blur_gan_region: str,
    ) -> None:
        if blur_gan_region not in BLUR_GAN_REGIONS:
            raise ValueError(
                f"blur_gan_region must be 'all' (the blur branch's GAN loss averaged over the "
                f"whole image, the paper's Eq. 1) or 'blurred' (over blur_mask == 1 only), "
                f"got {blur_gan_region!r}"
            )
        self.automatic_optimization = False
        self.blur_gan_region = blur_gan_region
        self.perceptual = perceptual
        self.g_optimizer_factory = g_optimizer
        self.d_optimizer_factory = d_optimizer
        self.gan_loss = GANLoss(gan_kind)
        self._perceptual_metrics = self._load_perceptual_metrics()
        self.init_metrics()

    def _load_perceptual_metrics(self) -> dict[str, nn.Module]:
        """piq's LPIPS / DISTS networks of the ``perceptual_metrics`` hyperparameter (see the
        module docstring; a system without it gets the default, ``None``)."""
        names = self.hparams.get("perceptual_metrics")
        if names is not None and len(names) == 0:
            return {}
        return local_perceptual_metrics(
            self.hparams.get("perceptual_weights_dir"),
            names=None if names is None else list(names),
        )

    def build_metrics(self) -> nn.ModuleDict:
        """The region metrics, logged as ``sr/<region>/<name>``."""
        learned = sorted(set(self.hparams.eval_metrics) & {"lpips", "dists"})
        if learned:
            raise ValueError(
                f"eval_metrics names {learned}: ask for LPIPS / DISTS with "
                f"perceptual_metrics={learned} (their weights are local files)"
            )
        region_metrics = RegionMetrics(
            crop_border=self.hparams.scale,
            metrics=self.hparams.eval_metrics,
            perceptual=self._perceptual_metrics,
        )
        return nn.ModuleDict({"sr": region_metrics})

    def in_progress_bar(self, name: str) -> bool:
        return name == "sr/all/psnr_y"

    # ------------------------------------------------------------------ generators
    def eval_generator(self) -> nn.Module:
        """The generator evaluated and exported (one branch, or the merged branches)."""
        return getattr(self, self.branches[0][0])

    def load_anchor(self) -> None:
        """Start every generator from ``anchor_ckpt`` (svblur, BasicSR or Real-ESRGAN keys)
        and every discriminator from ``anchor_discriminator_ckpt``
        (:meth:`load_anchor_discriminator`); each left at random when not given."""
        path = self.hparams.get("anchor_ckpt")
        if not path:
            log.info("no anchor_ckpt: the generators start from one random initialization")
        else:
            self._load_anchor_generator(Path(path))
        self.load_anchor_discriminator()

    def _load_anchor_generator(self, path: Path) -> None:
        """One generator into every branch; or, when the file holds one generator per
        branch (``<branch>.*`` keys for every branch, e.g. ``svblur-convert --branches`` of
        the released PBaSR file), each branch from its own keys."""
        state = from_basicsr_rrdbnet(read_state_dict(path))
        names = [name for name, _ in self.branches]
        if len(names) > 1 and all(any(k.startswith(f"{n}.") for k in state) for n in names):
            for name in names:
                prefix = f"{name}."
                part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                load_weights(getattr(self, name), part)
            log.info("loaded the branches %s from %s", names, path)
            return
        first = getattr(self, self.branches[0][0])
        load_weights(first, state)
        for name, _ in self.branches[1:]:
            getattr(self, name).load_state_dict(first.state_dict())
        log.info("loaded the anchor generator %s into %d branch(es)", path, len(self.branches))

    def load_anchor_discriminator(self) -> None:
        """Start every discriminator from ``anchor_discriminator_ckpt``.

        The file is a plain :class:`~svblur.models.UNetDiscriminatorSN` state dict (e.g.
        Real-ESRGAN's ``RealESRGAN_x4plus_netD.pth``) or a Lightning checkpoint of a
        :class:`GANSRTask` / :class:`PBaSRTask` (its ``discriminator.`` weights, e.g. the
        anchor run's ``final.ckpt``). A plain discriminator loads it strictly; a
        :class:`~svblur.models.ConditionalUNetDiscriminatorSN` loads it into its image path
        (``conv0`` ... ``conv9``, spectral-norm vectors included) and keeps its own condition
        path (``condition_conv``, ``fuse``: identity on the image features, zero on the
        condition), so that its output still does not depend on the condition and equals
        the loaded discriminator's. Optimizer state is not loaded.

        Raises:
            CheckpointError: The file cannot be read, or holds no state dict of tensors.
            CheckpointMismatchError: The weights do not fit a discriminator (size, keys).
        """
        path = self.hparams.get("anchor_discriminator_ckpt")
        if not path:
            return
        state = read_state_dict(Path(path))
        prefix = "discriminator."
        if any(key.startswith(prefix) for key in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        for _, name in self.branches:
            discriminator = getattr(self, name)
            target = dict(state)
            if isinstance(discriminator, ConditionalUNetDiscriminatorSN):
                target.update(
                    (key, value)
                    for key, value in discriminator.state_dict().items()
                    if key.startswith(CONDITION_PATH)
                )
            check_fits(discriminator, target, str(path))
            discriminator.load_state_dict(target, strict=True)
        log.info("loaded the anchor discriminator %s into %d branch(es)", path, len(self.branches))

    def setup(self, stage: str) -> None:
        if stage == "fit" and getattr(self.trainer, "ckpt_path", None) is None:
            self.load_anchor()
        super().setup(stage)

    def configure_optimizers(self) -> list[Optimizer]:
        """One optimizer per generator, then one per discriminator (branch order)."""
        generators = [
            self.g_optimizer_factory(params=getattr(self, g).parameters()) for g, _ in self.branches
        ]
        discriminators = [
            self.d_optimizer_factory(params=getattr(self, d).parameters()) for _, d in self.branches
        ]
        return [*generators, *discriminators]

    # ------------------------------------------------------------------ training
    def _discriminate(
        self, discriminator: nn.Module, image: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        if isinstance(discriminator, ConditionalUNetDiscriminatorSN):
            if mask is None:
                raise ValueError("a blur-conditioned discriminator needs batches with blur_mask")
            return discriminator(image, mask.to(image.dtype))
        return discriminator(image)

    def _branch_step(
        self,
        name: str,
        generator: nn.Module,
        discriminator: nn.Module,
        batch: dict[str, torch.Tensor],
        g_opt: Any,
        d_opt: Any,
    ) -> None:
        """One generator step, then one discriminator step, of one branch on its batch.

        A conditional discriminator sees ``blur_mask``; its GAN terms are averaged over the
        blurred region with ``blur_gan_region="blurred"``, over the whole image with
        ``"all"``.
        """
        hp = self.hparams
        lr, hr = batch["lr"], batch["hr"]
        conditional = isinstance(discriminator, ConditionalUNetDiscriminatorSN)
        mask = batch.get("blur_mask") if conditional else None
        region = mask if self.blur_gan_region == "blurred" else None
        sr = generator(lr)
        if sr.shape != hr.shape:
            raise ValueError(
                f"SR output {tuple(sr.shape)} and HR target {tuple(hr.shape)} differ: check that "
                f"the generator's scale equals the data's ({hp.scale})"
            )
        terms: dict[str, torch.Tensor] = {"l1": hp.l1_weight * F.l1_loss(sr.float(), hr.float())}
        if self.perceptual is not None and hp.perceptual_weight > 0:
            terms["perceptual"] = hp.perceptual_weight * self.perceptual(sr, hr)
        if hp.gan_weight > 0:
            discriminator.requires_grad_(False)
            fake = self._discriminate(discriminator, sr, mask)
            terms["gan"] = hp.gan_weight * self.gan_loss(fake, True, False, mask=region)
            discriminator.requires_grad_(True)
        g_loss = torch.stack(list(terms.values())).sum()
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()
        self._log_terms(f"train/{name}", terms, lr.shape[0], g_loss)
        if hp.gan_weight > 0:
            real = self._discriminate(discriminator, hr, mask)
            fake = self._discriminate(discriminator, sr.detach(), mask)
            d_loss = self.gan_loss(real, True, True, mask=region) + self.gan_loss(
                fake, False, True, mask=region
            )
            d_opt.zero_grad()
            self.manual_backward(d_loss)
            d_opt.step()
            self._log_terms(f"train/{name}", {"discriminator": d_loss}, lr.shape[0])

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self._evaluated = self.eval_generator()

    def on_test_start(self) -> None:
        super().on_test_start()
        self._evaluated = self.eval_generator()

    @torch.no_grad()
    def _evaluate(self, batch: dict[str, torch.Tensor], group: str, stage: str) -> None:
        generator = self._evaluated
        sr = generator(batch["lr"]).float()
        hr = batch["hr"].float()
        self.log(
            f"{stage}/loss",
            F.l1_loss(sr, hr),
            batch_size=hr.shape[0],
            sync_dist=True,
            add_dataloader_idx=False,
        )
        # no mask (general data): the whole image only
        self.metrics[group]["sr"].update(sr.clamp(0, 1), hr, batch.get("blur_mask"))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", "val")

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        group, stage = self._test_group(dataloader_idx)
        self._evaluate(batch, group, stage)

    # ------------------------------------------------------------------ checkpoints
    def record(self) -> dict[str, Any]:
        """The base record, and the generators whose mean is the evaluated network."""
        return {**super().record(), "average_of": [f"{g}." for g, _ in self.branches]}

    def export(self, path: str | Path) -> Path:
        """Write the evaluated generator as a plain state dict (loads into the bare
        network, e.g. ``RRDBNet``), atomically."""
        path = Path(path)
        save_state_dict(self.eval_generator().state_dict(), path)
        log.info("exported the generator to %s", path)
        return path

    def on_train_end(self) -> None:
        export = self.hparams.get("export_path")
        if export and self.trainer.is_global_zero:
            self.export(export)


class GANSRTask(GANSystem):
    """One generator and one discriminator, Real-ESRGAN's objective (the anchor, and the
    one-branch baselines of the PBaSR comparison).

    Batches are a data module's (``lr``, ``hr``, optionally ``blur_mask``), or a
    :class:`~svblur.data.CombinedDataModule`'s ``{"general": ..., "blur": ...}``, whose halves
    are then trained on together (the mixed-data baseline); a conditional discriminator
    gets the blur mask (general data count as not blurred, so that with
    ``blur_gan_region="blurred"`` they get no adversarial signal).

    Args:
        net: The generator (``lr -> sr``, e.g. :class:`~svblur.models.RRDBNet`).
        discriminator: Its discriminator.
        g_optimizer: Factory ``params -> Optimizer`` of the generator.
        d_optimizer: Factory of the discriminator.
        perceptual: The perceptual loss module (:class:`~svblur.systems.PerceptualLoss`)
            or ``None``.
        anchor_ckpt: Weights the generator starts from (``None``: random): a state dict
            of the generator or a Lightning checkpoint of this system (its ``net.``).
        anchor_discriminator_ckpt: Weights the discriminator starts from (``None``:
            random): a plain :class:`~svblur.models.UNetDiscriminatorSN` state dict or a
            Lightning checkpoint of a :class:`GANSRTask` (its ``discriminator.``), usually
            the anchor's, so that a fine-tuning starts from the anchor's GAN and not from a
            random discriminator (see :meth:`load_anchor_discriminator`).
        l1_weight: Weight of the L1 loss (Real-ESRGAN: 1).
        perceptual_weight: Weight of the perceptual loss (Real-ESRGAN: 1).
        gan_weight: Weight of the GAN loss (Real-ESRGAN: 0.1; 0: no discriminator steps).
        gan_kind: ``"vanilla"`` (Real-ESRGAN's) or ``"hinge"`` (PBaSR's Eq. 1), see
            :class:`~svblur.systems.GANLoss`.
        blur_gan_region: With a conditional discriminator, where its GAN terms are
            averaged: ``"all"`` (the whole image, PBaSR's Eq. 1) or ``"blurred"``
            (``blur_mask`` 1 only); no effect with a plain discriminator.
        scale: SR factor (also the border cropped by PSNR / SSIM).
        eval_metrics: Region metrics of validation and test, among
            :data:`~svblur.metrics.regions.DEFAULT_REGION_METRICS`.
        export_path: Where to write the generator's state dict at the end of training.
        perceptual_metrics: piq's learned metrics scored by region in validation and test
            beside ``eval_metrics``: ``None``, LPIPS and DISTS where their weight files are
            found (one log line names the missing ones); a list (``["lpips", "dists"]``),
            those, a missing file being an error; ``[]``, none.
        perceptual_weights_dir: Folder holding those weight files (then the torch hub
            cache); never downloaded.
    """

    branches = (("net", "discriminator"),)

    def __init__(
        self,
        net: nn.Module,
        discriminator: nn.Module,
        g_optimizer: Callable[..., Optimizer],
        d_optimizer: Callable[..., Optimizer],
        perceptual: nn.Module | None = None,
        anchor_ckpt: str | None = None,
        anchor_discriminator_ckpt: str | None = None,
        l1_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        gan_weight: float = 0.1,
        gan_kind: str = "vanilla",
        blur_gan_region: str = "blurred",
        scale: int = 4,
        eval_metrics: Sequence[str] = EVAL_METRICS,
        export_path: str | None = None,
        perceptual_metrics: Sequence[str] | None = None,
        perceptual_weights_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["net", "discriminator", "g_optimizer", "d_optimizer", "perceptual"],
            logger=False,
        )
        self.net = net
        self.discriminator = discriminator
        self._init_shared(perceptual, g_optimizer, d_optimizer, gan_kind, blur_gan_region)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.net(lr)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        g_opt, d_opt = self.optimizers()
        if "general" in batch and "blur" in batch:
            general, blur = batch["general"], batch["blur"]
            mask = blur.get("blur_mask")
            merged = {key: torch.cat([general[key], blur[key]]) for key in ("lr", "hr")}
            if mask is not None:
                merged["blur_mask"] = torch.cat(
                    [torch.zeros_like(mask[: len(general["lr"])]), mask]
                )
            batch = merged
        self._branch_step("net", self.net, self.discriminator, batch, g_opt, d_opt)
