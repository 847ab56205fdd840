"""SSR stage 3: AMF (Eq. 3), the sparsity term (Eq. 5), DiffusionSR (shapes, seeded and tiled
sampling, latent space), the stage-3 training system through svblur-train (ground-truth
conditions; a frozen SVKR) and svblur-predict with a diffusion checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from svblur.checkpoints import RECORD_KEY, build_network, load_network, network_record
from svblur.cli import predict as predict_cli
from svblur.errors import InputError
from svblur.experiments.training import build, train
from svblur.models import DiffusionSR
from svblur.nn import AMF, MultiModalAMF, amf_sparsity

from .helpers import epoch_losses

# Every part present, tiny widths (5x5 kernels: 25-channel fields).
TINY_NET = {
    "kernel_size": 5,
    "block_channels": (8, 16),
    "norm_num_groups": 4,
    "encoder_channels": {"kernel": (4, 8), "depth": (4, 8), "lr": (8, 16)},
    "kernel_code_channels": 4,
    "amf_hidden": 8,
}
TINY_CLI = [
    "degradation.blur.kernel_size=5",
    "model.net.kernel_size=5",
    "model.net.block_channels=[8,16]",
    "model.net.norm_num_groups=4",
    "model.net.encoder_channels={kernel:[4,8],depth:[4,8],lr:[8,16]}",
    "model.net.kernel_code_channels=4",
    "model.net.amf_hidden=8",
    "model.net.estimator.kernel_estimator.channels=[4,8]",
    "model.net.estimator.kernel_estimator.depth_channels=4",
    "model.net.estimator.kernel_estimator.sft_channels=4",
    "model.net.estimator.sr_net.num_features=8",
    "model.net.estimator.sr_net.num_blocks=1",
    "model.net.estimator.sr_net.growth_channels=4",
    "model.net.estimator.sr_net.prior_channels=8",
    "model.net.estimator.pca=3",
    "model.net.estimator.sr_net.kernel_channels=3",
    "model.sampling.steps=2",
    "model.log_images=0",
]

# The parts of a test-sized SVKR (5x5 kernels, no PCA).
TINY_DKENET = {
    "_target_": "svblur.models.DKENet",
    "kernel_size": 5,
    "channels": [4, 8],
    "depth_channels": 4,
    "sft_channels": 4,
}
TINY_RRDBSFT = {
    "_target_": "svblur.models.RRDBSFT",
    "num_features": 8,
    "num_blocks": 1,
    "growth_channels": 4,
    "prior_channels": 8,
    "kernel_channels": 25,
}


def tiny_vae() -> AutoencoderKL:
    """A random 4-channel VAE that halves the size (two blocks of 8 channels)."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )


def _inputs(batch: int = 2, h: int = 8, w: int = 10, taps: int = 25, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, 3, h, w, generator=g)
    depth = torch.rand(batch, 1, 4 * h, 4 * w, generator=g)
    kernels = torch.rand(batch, taps, 4 * h, 4 * w, generator=g)
    return lr, depth, kernels / kernels.sum(1, keepdim=True)


def _tiny(**kwargs) -> DiffusionSR:
    torch.manual_seed(0)
    return DiffusionSR(**{**TINY_NET, **kwargs})


# ---------------------------------------------------------------------- AMF


def test_amf_is_batch_norm_at_initialization():
    amf = AMF(6, 3, hidden=16)
    x, cond = torch.randn(4, 6, 5, 7) * 3 + 1, torch.randn(4, 3, 5, 7)
    bn = torch.nn.BatchNorm2d(6, affine=False)
    torch.testing.assert_close(amf(x, cond), bn(x))  # training mode: batch statistics
    amf.eval(), bn.eval()
    torch.testing.assert_close(amf(x, cond), bn(x))  # eval: the (same) running statistics
    assert not torch.allclose(bn(x), x)


def test_amf_follows_eq3_with_hand_set_mlps():
    amf = AMF(2, 1, hidden=2, kernel_size=1).eval()
    with torch.no_grad():
        amf.shared[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        amf.shared[0].bias.zero_()
        amf.alpha.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]).view(2, 2, 1, 1))
        amf.alpha.bias.copy_(torch.tensor([0.5, 0.0]))
        amf.beta.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 1.0]]).view(2, 2, 1, 1))
        amf.beta.bias.copy_(torch.tensor([0.0, -1.0]))
        amf.norm.running_mean.copy_(torch.tensor([1.0, -2.0]))
        amf.norm.running_var.copy_(torch.tensor([4.0, 0.25]))
    x, f = torch.randn(1, 2, 3, 3), torch.randn(1, 1, 3, 3)
    hidden = torch.cat([f.clamp(min=0), (-f).clamp(min=0)], 1)  # ReLU(+f), ReLU(-f)
    alpha = torch.cat([2 * hidden[:, :1] + 0.5, 3 * hidden[:, 1:]], 1)
    beta = torch.cat([hidden[:, 1:], hidden.sum(1, keepdim=True) - 1], 1)
    eps = amf.norm.eps
    bn = (x - torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)) / torch.sqrt(
        torch.tensor([4.0, 0.25]).view(1, 2, 1, 1) + eps
    )
    torch.testing.assert_close(amf(x, f), (1 + alpha) * bn + beta)


def test_multimodal_amf_averages_its_modalities():
    fusion = MultiModalAMF(4, {"kernel": 2, "depth": 1, "lr": 3}, hidden=8).eval()
    for amf in fusion.amf.values():
        torch.nn.init.normal_(amf.alpha.weight), torch.nn.init.normal_(amf.beta.weight)
    x = torch.randn(2, 4, 6, 6)
    conds = {
        "kernel": torch.randn(2, 2, 3, 3),
        "depth": torch.randn(2, 1, 6, 6),
        "lr": torch.randn(2, 3, 6, 6),
    }
    expected = torch.stack([fusion.amf[k](x, conds[k]) for k in conds]).mean(0)
    torch.testing.assert_close(fusion(x, conds), expected)
    with pytest.raises(KeyError, match="depth"):
        fusion(x, {"kernel": conds["kernel"], "lr": conds["lr"]})


def test_sparsity_term_is_the_weighted_mean_absolute_feature():
    features = {
        "kernel": [torch.full((1, 2, 2, 2), -2.0), torch.full((1, 4, 1, 1), 4.0)],
        "depth": [torch.tensor([[[[1.0, -3.0]]]])],
        "lr": [torch.ones(1, 1, 2, 2)],
    }
    value = amf_sparsity(features, {"kernel": 0.5, "depth": 2.0, "lr": 0.0})
    assert float(value) == pytest.approx(0.5 * (2 + 4) / 2 + 2.0 * 2.0)
    assert float(amf_sparsity(features, {})) == 0.0
    with pytest.raises(KeyError, match="blur"):
        amf_sparsity(features, {"blur": 1.0})


# ---------------------------------------------------------------------- DiffusionSR


def test_forward_shapes_features_and_gradients():
    net = _tiny()
    lr, depth, kernels = _inputs()
    x0 = net.encode_image(torch.rand(2, 3, 32, 40))
    out = net(torch.randn_like(x0), torch.tensor([3, 900]), lr, depth, kernels)
    assert out["epsilon"].shape == (2, 3, 32, 40)
    for name, widths in TINY_NET["encoder_channels"].items():
        assert [f.shape for f in out["features"][name]] == [
            (2, widths[0], 32, 40),
            (2, widths[1], 16, 20),
        ]
    out["epsilon"].square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # zero-initialized AMF outputs: their weights learn first, the encoders once they moved
    assert net.down_fusion[0].amf["kernel"].alpha.weight.grad.abs().sum() > 0
    assert net.kernel_code.weight.grad.abs().sum() == 0
    net.zero_grad()
    with torch.no_grad():
        for fusion in [*net.down_fusion, *net.up_fusion]:
            fusion.amf["kernel"].alpha.weight.normal_(std=0.1)
    x0 = net.encode_image(torch.rand(2, 3, 32, 40))
    net(torch.randn_like(x0), torch.tensor([3, 900]), lr, depth, kernels)[
        "epsilon"
    ].mean().backward()
    assert net.kernel_code.weight.grad.abs().sum() > 0  # the kernel field reaches the loss
    deep = _tiny(
        scale=2,
        block_channels=(4, 4, 8),
        encoder_channels={"kernel": (4, 4, 4), "depth": (4, 4, 4), "lr": (4, 4, 8)},
    )
    with pytest.raises(InputError, match="multiple of 4"):  # 2 down-samplings, HR 14 x 18
        deep.condition_inputs(torch.rand(1, 3, 7, 9), depth[:1], kernels[:1])
    with pytest.raises(InputError, match="batch"):
        net.condition_inputs(lr[:1], depth, kernels)
    with pytest.raises(InputError, match="kernel_size=5"):
        net(torch.randn_like(x0), torch.tensor([3, 9]), lr, depth, torch.rand(2, 9, 8, 10))


def test_sampling_is_deterministic_for_a_seed():
    net = _tiny().eval()
    lr, depth, kernels = _inputs()
    first = net.sample(lr, depth, kernels, steps=3, seed=7)
    assert first.shape == (2, 3, 32, 40) and 0 <= first.min() and first.max() <= 1
    torch.testing.assert_close(
        net.sample(lr, depth, kernels, steps=3, seed=7), first, rtol=0, atol=0
    )
    generator = torch.Generator().manual_seed(7)
    same = net.sample(lr, depth, kernels, steps=3, generator=generator)
    torch.testing.assert_close(same, first, rtol=0, atol=0)
    assert not torch.equal(net.sample(lr, depth, kernels, steps=3, seed=8), first)
    solver = net.sample(lr, depth, kernels, steps=3, seed=7, sampler="dpm_solver")
    assert solver.shape == first.shape and not torch.equal(solver, first)
    with pytest.raises(InputError, match="sampler"):
        net.sample(lr, depth, kernels, steps=3, sampler="euler")


def test_tiles_share_the_noise_and_blend_to_the_untiled_result(monkeypatch):
    net = _tiny().eval()
    lr, depth, kernels = _inputs(batch=1, h=13, w=18)  # odd sizes: padded and cropped back

    def pointwise(noisy, timesteps, image, features):  # no receptive field: tiles must agree
        return 0.5 * noisy + 0.1 * image + 1e-4 * timesteps.view(-1, 1, 1, 1)

    monkeypatch.setattr(net, "denoise", pointwise)
    whole = net.sample(lr, depth, kernels, steps=4, seed=3)
    tiled = net.sample(lr, depth, kernels, steps=4, seed=3, tile_size=6, tile_overlap=3)
    assert whole.shape == tiled.shape == (1, 3, 52, 72)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)
    monkeypatch.undo()
    real = net.sample(lr, depth, kernels, steps=2, seed=3, tile_size=6, tile_overlap=3)
    assert real.shape == (1, 3, 52, 72) and torch.isfinite(real).all()


def test_latent_space_with_a_local_vae_and_a_clear_error_without(tmp_path):
    torch.manual_seed(0)
    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "vae")
    net = _tiny(vae_path=str(tmp_path / "vae")).eval()
    assert net.image_channels == 4 and net.size_multiple == 4
    assert not any(p.requires_grad for p in net.vae.parameters())
    lr, depth, kernels = _inputs()
    x0 = net.encode_image(torch.rand(2, 3, 32, 40))
    assert x0.shape == (2, 4, 16, 20)
    assert net(x0, torch.tensor([1, 2]), lr, depth, kernels)["epsilon"].shape == x0.shape
    net.train()
    assert not net.vae.training  # frozen VAE stays in eval mode
    sr = net.eval().sample(lr, depth, kernels, steps=2, seed=0)
    assert sr.shape == (2, 3, 32, 40)
    with pytest.raises(InputError, match="no folder"):
        DiffusionSR(**TINY_NET, vae_path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no loadable AutoencoderKL"):
        DiffusionSR(**TINY_NET, vae_path=str(tmp_path / "empty"))


# ---------------------------------------------------------------------- stage 3 training


def test_stage3_trains_on_ground_truth_conditions_and_its_loss_falls(make_cfg):
    cfg = make_cfg(
        "train",
        [
            "experiment=synthetic_ssr_stage3",
            *TINY_CLI,
            "data.hr_size=[32,40]",
            "data.augment=false",
            "trainer.max_epochs=5",
            "callbacks=none",
        ],
    )
    assert cfg.model.net._target_ == "svblur.models.DiffusionSR"
    assert cfg.degradation.blur._target_ == "svblur.degradation.GaussianFieldBlur"
    assert cfg.model.condition == cfg.model.net.condition == "ground_truth"
    metrics = train(cfg)
    losses = epoch_losses(Path(cfg.paths.output_dir))
    assert len(losses) == 5 and losses[-1] < 0.8 * losses[0], losses
    assert 0 < metrics["test/loss/sparsity"] < 0.01 * metrics["test/loss/epsilon"]
    assert 0 < metrics["test/sr/psnr_y"] < 60 and 0 <= metrics["test/sr/ssim_y"] <= 1


class _WatchEstimator:
    """Record, at every training batch, whether the estimator is in training mode."""

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def __call__(self, module) -> None:
        self.modes.append(module.net.estimator.training)


def test_stage3_with_svkr_keeps_it_frozen(make_cfg, tmp_path):
    import lightning as L

    overrides = [
        "experiment=synthetic_ssr_stage3",
        *TINY_CLI,
        "data.hr_size=[32,40]",
        "model.condition=svkr",
        "data.train_size=6",
        "trainer.max_epochs=1",
        "++trainer.limit_val_batches=1",
        "callbacks=none",
        "logger=csv",
    ]
    estimator_cfg = make_cfg("train", overrides).model.net.estimator
    torch.manual_seed(1)
    svkr = build_network(OmegaConf.to_container(estimator_cfg, resolve=True))
    torch.save(svkr.state_dict(), tmp_path / "svkr.pth")
    with pytest.raises(ValueError, match="model.kernel_estimator_ckpt"):  # no weights given
        datamodule, model, trainer = build(make_cfg("train", overrides))
        trainer.fit(model, datamodule)

    datamodule, model, trainer = build(
        make_cfg("train", [*overrides, f"model.svkr_ckpt={tmp_path / 'svkr.pth'}"])
    )
    watch = _WatchEstimator()

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            watch(pl_module)

    trainer.callbacks.append(Watch())
    trainer.fit(model, datamodule)
    assert watch.modes == [False, False, False]
    estimator = model.net.estimator
    assert not any(p.requires_grad for p in estimator.parameters())
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in estimator.parameters()}
    for key, value in svkr.state_dict().items():  # loaded, then unchanged by training
        torch.testing.assert_close(estimator.state_dict()[key], value, rtol=0, atol=0)
    assert "val/kernels/l1" in trainer.callback_metrics


def test_svkr_is_assembled_from_stage_1_and_2_checkpoints(tmp_path):
    from functools import partial

    from svblur.degradation import KernelPCA
    from svblur.models import RRDBSFT, SVKR, DKENet, GroundTruthDepth
    from svblur.systems import DiffusionSRTask

    def svkr(seed: int) -> SVKR:
        torch.manual_seed(seed)
        pca = KernelPCA.fit(torch.rand(50, 25).softmax(1), num_components=3)
        estimator = DKENet(kernel_size=5, channels=(4, 8), depth_channels=4, sft_channels=4)
        sr = RRDBSFT(8, 1, 4, prior_channels=8, kernel_channels=3)
        return SVKR(estimator, GroundTruthDepth(), sr, pca=pca)

    trained = svkr(1)
    torch.save(
        {"state_dict": {f"net.{k}": v for k, v in trained.kernel_estimator.state_dict().items()}},
        tmp_path / "s1.ckpt",
    )
    stage2 = {f"net.{k}": v for k, v in trained.sr_net.state_dict().items()}
    stage2.update({k: getattr(trained, k) for k in ("pca_mean", "pca_components", "pca_explained")})
    torch.save({"state_dict": stage2}, tmp_path / "s2.ckpt")
    task = DiffusionSRTask(
        _tiny(condition="svkr", estimator=svkr(2)),
        condition="svkr",
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        kernel_estimator_ckpt=str(tmp_path / "s1.ckpt"),
        sr_ckpt=str(tmp_path / "s2.ckpt"),
    )
    task.load_stage_checkpoints()
    loaded = task.net.estimator.state_dict()
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert not task.net.estimator.training
    assert not any(p.requires_grad for p in task.net.estimator.parameters())


# ---------------------------------------------------------------------- svblur-predict


def _diffusion_checkpoint(path: Path) -> dict:
    config = {
        "_target_": "svblur.models.DiffusionSR",
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in TINY_NET.items()},
        "encoder_channels": {k: list(v) for k, v in TINY_NET["encoder_channels"].items()},
        "condition": "svkr",
        "estimator": {
            "_target_": "svblur.models.SVKR",
            "iterations": 2,
            "kernel_estimator": TINY_DKENET,
            "depth_estimator": {
                "_target_": "svblur.models.SMPDepthNet",
                "encoder_name": "tu-mobilenetv3_small_050",
                "encoder_depth": 3,
                "decoder_channels": [8, 8, 8],
            },
            "sr_net": TINY_RRDBSFT,
        },
    }
    torch.manual_seed(0)
    net = build_network(config)
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            RECORD_KEY: network_record("DiffusionSRTask", config),
        },
        path,
    )
    return config


def _run_predict(monkeypatch, tmp_path: Path, args: list[str]) -> None:
    GlobalHydra.instance().clear()
    argv = ["svblur-predict", *args, f"paths.log_dir={tmp_path / 'logs'}", "device=cpu"]
    monkeypatch.setattr(sys, "argv", argv)
    predict_cli.main()
    GlobalHydra.instance().clear()


def _predict_reproducibly(monkeypatch, tmp_path: Path, ckpt: Path, model: str) -> None:
    """svblur-predict with ``ckpt`` (tiled, 2 steps): the same seed, the same image."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (11, 13, 3), dtype=np.uint8)).save(photos / "p.png")
    common = [f"ckpt={ckpt}", f"input={photos}", f"model={model}", "tile_size=8", "tile_overlap=2"]
    results = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / name
        _run_predict(monkeypatch, tmp_path, [*common, f"output={out}", f"seed={seed}", "steps=2"])
        assert sorted(p.name for p in out.glob("p_*.png")) == ["p_kernels.png", "p_sr.png"]
        with Image.open(out / "p_sr.png") as sr:
            assert sr.size == (4 * 13, 4 * 11)
            results[name] = np.asarray(sr)
    np.testing.assert_array_equal(results["a"], results["b"])
    assert not np.array_equal(results["a"], results["c"])


def test_predict_samples_a_diffusion_checkpoint_reproducibly(monkeypatch, tmp_path):
    ckpt = tmp_path / "ssr_stage3.ckpt"
    _diffusion_checkpoint(ckpt)
    loaded = load_network(ckpt)
    assert loaded.kind == "diffusion_sr" and loaded.recorded
    _predict_reproducibly(monkeypatch, tmp_path, ckpt, "diffusion_sr")


def test_predict_refuses_a_ground_truth_conditioned_checkpoint(tmp_path):
    from svblur.cli.predict import predict

    from .test_predict import _predict_cfg

    net = _tiny()
    config = {"_target_": "svblur.models.DiffusionSR", **TINY_NET}
    config["block_channels"] = list(config["block_channels"])
    config["encoder_channels"] = {k: list(v) for k, v in TINY_NET["encoder_channels"].items()}
    ckpt = tmp_path / "gt.ckpt"
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            RECORD_KEY: network_record("DiffusionSRTask", config),
        },
        ckpt,
    )
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(photo)
    cfg = _predict_cfg(tmp_path, [f"ckpt={ckpt}", f"input={photo}", f"output={tmp_path / 'o'}"])
    with pytest.raises(InputError, match="condition=svkr"):
        predict(cfg)


def test_bicubic_input_is_the_lr_upscaled():
    net = _tiny()
    lr, depth, kernels = _inputs(batch=1)
    inputs = net.condition_inputs(lr, depth, kernels)
    from svblur.degradation import imresize

    torch.testing.assert_close(inputs["image"], 2 * imresize(lr, 4).clamp(0, 1) - 1)
    assert inputs["kernel"].shape == (1, 4, 32, 40)
    torch.testing.assert_close(inputs["depth"], 2 * depth - 1)
    assert F.mse_loss(inputs["lr"], inputs["image"]) == 0
