"""SSR stage 3 as the paper describes it: LatentDiffusionSR on a tiny random
Stable-Diffusion-layout folder built here (loading and freezing, exact equality with the
pretrained UNet at initialisation, what one training step changes, seeded and tiled
sampling, svblur-train with oracle conditions, svblur-predict on a checkpoint)."""

from __future__ import annotations

import json
import logging
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from svblur.checkpoints import RECORD_KEY, load_network
from svblur.errors import InputError
from svblur.experiments.training import train
from svblur.models import LatentDiffusionSR
from svblur.systems import DiffusionSRTask

from .test_diffusion_sr import TINY_DKENET, TINY_RRDBSFT, _predict_reproducibly, tiny_vae

# Small encoders, AMFs and injections on the tiny folder (5x5 kernels: 25-channel fields).
TINY_OPTIONS = {
    "kernel_size": 5,
    "encoder_layers": 1,
    "encoder_mid_attention": False,
    "kernel_code_channels": 4,
    "amf_hidden": 8,
    "injection_hidden": 8,
}
# An SVKR small enough for a test (5x5 kernels, no PCA), for condition="svkr".
TINY_SVKR = {
    "_target_": "svblur.models.SVKR",
    "iterations": 1,
    "kernel_estimator": TINY_DKENET,
    "depth_estimator": {"_target_": "svblur.models.ssr.ConstantDepth"},
    "sr_net": TINY_RRDBSFT,
}


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion folder: unet/, vae/ (x2) and scheduler/, no text
    encoder (the test of the prompt adds one to a copy)."""
    folder = tmp_path_factory.mktemp("sd")
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=2,
        norm_num_groups=4,
    ).save_pretrained(folder / "unet")
    tiny_vae().save_pretrained(folder / "vae")
    DDIMScheduler(  # SD 2.1-base's schedule
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    ).save_pretrained(folder / "scheduler")
    return folder


def _net(folder: Path, **options) -> LatentDiffusionSR:
    torch.manual_seed(0)
    return LatentDiffusionSR.from_pretrained(folder, **{**TINY_OPTIONS, **options})


def _inputs(batch: int = 2, h: int = 8, w: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, 3, h, w, generator=g)
    depth = torch.rand(batch, 1, 4 * h, 4 * w, generator=g)
    kernels = torch.rand(batch, 25, 4 * h, 4 * w, generator=g)
    return lr, depth, kernels / kernels.sum(1, keepdim=True)


def _frozen_state(net: LatentDiffusionSR) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.clone()
        for name in ("unet", "vae")
        for key, value in getattr(net, name).state_dict().items()
    }


# ---------------------------------------------------------------------- loading


def test_loads_the_folder_unchanged_and_frozen(sd_folder):
    net = _net(sd_folder)
    reference = UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet")
    for key, value in reference.state_dict().items():
        assert torch.equal(net.unet.state_dict()[key], value), key
    assert isinstance(net.unet, UNet2DConditionModel) and isinstance(net.vae, AutoencoderKL)
    assert net.pretrained_folder == str(sd_folder.resolve())
    net.train()
    for part in (net.unet, net.vae):
        assert not part.training
        assert not any(p.requires_grad for p in part.parameters())
    assert net.encoders["lr"].training and net.injections[0].training
    # no text encoder in the folder: a zero prompt of the UNet's cross-attention width
    assert net.prompt_embedding.shape == (1, 77, 8) and not net.prompt_embedding.any()
    # every residual block of the down, middle and up blocks is modulated, at its level
    assert len(net.injection_sites) == 8
    assert ("down_blocks.1.resnets.0", 1) in net.injection_sites
    assert ("up_blocks.1.resnets.1", 0) in net.injection_sites
    # checkpoints hold the trainable parts and the prompt, not the frozen prior
    state = net.state_dict()
    assert "prompt_embedding" in state and "injections.0.gamma.weight" in state
    assert not [k for k in state if k.startswith(("unet.", "vae."))]
    # ... and load strictly without it
    fresh = _net(sd_folder)
    fresh.load_state_dict(state, strict=True)
    with pytest.raises(RuntimeError, match="injections.0.gamma.weight"):
        fresh.load_state_dict({k: v for k, v in state.items() if "injections.0." not in k})


def test_missing_folders_get_one_line_that_names_them(sd_folder, tmp_path):
    with pytest.raises(InputError, match="no folder at") as missing:
        LatentDiffusionSR.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(InputError, match="allow_download=true"):
        LatentDiffusionSR.from_pretrained("stabilityai/stable-diffusion-2-1-base")
    partial_folder = tmp_path / "partial"
    partial_folder.mkdir()
    (partial_folder / "unet").symlink_to(sd_folder / "unet")
    (partial_folder / "scheduler").mkdir()
    with pytest.raises(InputError, match=r"has no vae/ sub-folder") as no_vae:
        LatentDiffusionSR.from_pretrained(partial_folder)
    (partial_folder / "vae").mkdir()
    with pytest.raises(InputError, match=r"vae' holds no loadable AutoencoderKL") as empty:
        LatentDiffusionSR.from_pretrained(partial_folder)
    with pytest.raises(InputError, match="model.net.pretrained"):
        LatentDiffusionSR()
    for error in (missing, no_vae, empty):
        assert "\n" not in str(error.value)


def test_the_prompt_is_the_text_encoders_empty_prompt(sd_folder, tmp_path, monkeypatch):
    """The text-encoder path, with stand-ins for transformers' CLIP classes."""
    folder = tmp_path / "with_text"
    folder.mkdir()
    for part in ("unet", "vae", "scheduler"):
        (folder / part).symlink_to(sd_folder / part)
    (folder / "text_encoder").mkdir()
    with pytest.raises(InputError, match="no tokenizer/"):
        _net(folder)
    (folder / "tokenizer").mkdir()
    seen = []

    class Tokenizer:
        model_max_length = 6

        @classmethod
        def from_pretrained(cls, path, **kwargs):
            seen.append(Path(path).name)
            return cls()

        def __call__(self, texts, **kwargs):
            assert texts == [""] and kwargs["max_length"] == 6
            return types.SimpleNamespace(input_ids=torch.zeros(1, 6, dtype=torch.long))

    class TextModel(torch.nn.Module):
        @classmethod
        def from_pretrained(cls, path, **kwargs):
            seen.append(Path(path).name)
            return cls()

        def forward(self, ids):
            return (torch.arange(6 * 8.0).view(1, 6, 8),)

    fake = types.SimpleNamespace(CLIPTokenizer=Tokenizer, CLIPTextModel=TextModel)
    monkeypatch.setitem(sys.modules, "transformers", fake)
    net = _net(folder)
    assert seen == ["tokenizer", "text_encoder"]
    assert torch.equal(net.prompt_embedding, torch.arange(48.0).view(1, 6, 8))
    assert not _net(folder, use_text_encoder=False).prompt_embedding.any()


def test_the_prompt_of_a_real_tiny_clip_text_encoder(sd_folder, tmp_path):
    """A tiny random CLIP text encoder and a hand-written BPE vocabulary, saved as a
    diffusers folder holds them: the prompt embedding is the encoder's output for the
    empty prompt, <start> then <end> padding, computed here directly."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "with_clip"
    (folder / "tokenizer").mkdir(parents=True)
    for part in ("unet", "vae", "scheduler"):
        (folder / part).symlink_to(sd_folder / part)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        str(folder / "tokenizer" / "vocab.json"),
        str(folder / "tokenizer" / "merges.txt"),
        model_max_length=6,
    )
    tokenizer.save_pretrained(folder / "tokenizer")
    config = transformers.CLIPTextConfig(
        vocab_size=6,
        hidden_size=8,  # the tiny UNet's cross-attention width
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=6,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    encoder = transformers.CLIPTextModel(config).eval()
    encoder.save_pretrained(folder / "text_encoder")
    net = _net(folder)
    with torch.no_grad():
        expected = encoder(torch.tensor([[0, 1, 1, 1, 1, 1]])).last_hidden_state
    assert net.prompt_embedding.shape == (1, 6, 8) and net.prompt_embedding.any()
    torch.testing.assert_close(net.prompt_embedding, expected, rtol=0, atol=0)
    assert "prompt_embedding" in net.state_dict()


# ---------------------------------------------------------------------- the denoiser


def test_at_initialisation_it_is_the_pretrained_unet_exactly(sd_folder):
    net = _net(sd_folder)
    lr, depth, kernels = _inputs()
    latents = torch.randn(2, 4, 16, 20)
    timesteps = torch.tensor([3, 800])
    prompt = net.prompt_embedding.expand(2, -1, -1)
    for mode in (True, False):
        net.train(mode)
        with torch.no_grad():
            ours = net.predict_noise(latents, timesteps, lr, kernels=kernels, depth=depth)
            pretrained = net.unet(latents, timesteps, encoder_hidden_states=prompt).sample
        assert torch.equal(ours, pretrained)
    # once an injection moves, the conditions reach the prediction
    with torch.no_grad():
        net.injections[2].gamma.weight.normal_(std=0.1)
        moved = net.predict_noise(latents, timesteps, lr, kernels=kernels, depth=depth)
        # the hooks act only inside predict_noise: the UNet on its own is unchanged
        assert torch.equal(
            net.unet(latents, timesteps, encoder_hidden_states=prompt).sample, pretrained
        )
    assert not torch.allclose(moved, pretrained)
    with pytest.raises(InputError, match="no condition estimator"):
        net.predict_noise(latents, timesteps, lr)
    with pytest.raises(InputError, match="does not match the latent size"):
        net.predict_noise(latents, timesteps, lr[..., :7, :], kernels=kernels, depth=depth)


def test_one_training_step_changes_only_the_trainable_parameters(sd_folder):
    net = _net(sd_folder)
    task = DiffusionSRTask(
        net, condition="ground_truth", optimizer=partial(torch.optim.AdamW, lr=1e-2)
    )
    counts = task.parameter_counts()
    frozen_count = sum(p.numel() for m in (net.unet, net.vae) for p in m.parameters())
    assert counts["frozen"] == frozen_count
    assert counts["trainable"] == sum(p.numel() for p in net.parameters()) - frozen_count > 0
    optimizer = task.configure_optimizers()["optimizer"]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for m in (net.unet, net.vae) for p in m.parameters()}

    frozen_before = _frozen_state(net)
    trainable_before = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    lr, depth, kernels = _inputs()
    batch = {"lr": lr, "hr": torch.rand(2, 3, 32, 40)}
    task.train()
    terms = task.diffusion_loss(
        batch, {"kernels": kernels, "depth": depth}, torch.Generator().manual_seed(0)
    )
    (terms["epsilon"] + terms["sparsity"]).backward()
    optimizer.step()
    for key, value in _frozen_state(net).items():
        assert torch.equal(value, frozen_before[key]), key
    changed = [
        n
        for n, p in net.named_parameters()
        if p.requires_grad and not torch.equal(p, trainable_before[n])
    ]
    assert any(n.startswith("injections.") for n in changed)
    assert set(changed) <= set(trainable_before)


# ---------------------------------------------------------------------- sampling


def test_sampling_is_deterministic_by_seed(sd_folder):
    net = _net(sd_folder).eval()
    lr, depth, kernels = _inputs()
    first = net.sample(lr, depth, kernels, steps=3, seed=7)
    assert first.shape == (2, 3, 32, 40) and 0 <= first.min() and first.max() <= 1
    assert not net.vae.use_tiling  # the VAE's tiling is on while sampling only
    assert torch.equal(net.sample(lr, depth, kernels, steps=3, seed=7), first)
    assert not torch.equal(net.sample(lr, depth, kernels, steps=3, seed=8), first)
    solver = net.sample(lr, depth, kernels, steps=3, seed=7, sampler="dpm_solver")
    assert solver.shape == first.shape and not torch.equal(solver, first)
    assert torch.equal(
        net.sample(lr, depth, kernels, steps=3, seed=7, sampler="dpm_solver"), solver
    )
    with pytest.raises(InputError, match="sampler"):
        net.sample(lr, depth, kernels, steps=3, sampler="euler")


def test_tiled_and_untiled_sampling_agree(sd_folder, monkeypatch):
    """Tiles share one noise tensor and blend their predictions by weights that sum to the
    whole: with a denoiser that has no receptive field (each latent pixel's prediction
    depends on that pixel of the noisy latent and of the LR latent only) every tile
    predicts what the whole latent does, so the tiled result must equal the untiled one.
    (A real UNet sees across tile borders, so there tiles are an approximation.)"""
    net = _net(sd_folder).eval()
    lr, depth, kernels = _inputs(batch=1, h=13, w=18)  # odd sizes: padded and cropped back

    def pointwise(latents, timesteps, inputs, static=None):
        return 0.5 * latents + 0.1 * inputs["lr"] + 1e-4 * timesteps.view(-1, 1, 1, 1)

    monkeypatch.setattr(net, "denoise", pointwise)
    for sampler in ("ddim", "dpm_solver"):
        whole = net.sample(lr, depth, kernels, steps=4, seed=3, sampler=sampler)
        tiled = net.sample(
            lr, depth, kernels, steps=4, seed=3, sampler=sampler, tile_size=6, tile_overlap=3
        )
        assert whole.shape == tiled.shape == (1, 3, 52, 72)
        torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    monkeypatch.undo()
    real = net.sample(lr, depth, kernels, steps=2, seed=3, tile_size=6, tile_overlap=3)
    assert real.shape == (1, 3, 52, 72) and torch.isfinite(real).all()


# ---------------------------------------------------------------------- svblur-train


def test_svblur_train_runs_on_oracle_conditions_without_an_svkr(make_cfg, sd_folder):
    # svblur-train experiment=synthetic_ssr_latent model.net.pretrained=DIR \
    #   model.condition=ground_truth debug=fdr
    cfg = make_cfg(
        "train",
        [
            "experiment=synthetic_ssr_latent",
            f"model.net.pretrained={sd_folder}",
            "model.condition=ground_truth",
            "debug=fdr",
        ],
    )
    assert cfg.model.net._target_ == "svblur.models.LatentDiffusionSR"
    assert cfg.model.net.condition == "ground_truth"
    metrics = train(cfg)
    assert np.isfinite(metrics["train/loss_step"])
    assert 0 < metrics["test/sr/psnr_y"] < 60


def test_svblur_train_logs_the_papers_iqa_metrics_from_local_files(
    make_cfg, sd_folder, tmp_path, caplog
):
    """SSR Tab. 1's pyiqa metrics at test: NIQE from its local statistics file, the three
    whose files are absent skipped with a line naming each; none at validation."""
    pytest.importorskip("pyiqa")
    from .test_iqa import niqe_statistics

    niqe_statistics(tmp_path)
    cfg = make_cfg(
        "train",
        [
            "experiment=synthetic_ssr_latent",
            f"model.net.pretrained={sd_folder}",
            "model.condition=ground_truth",
            "data.hr_size=[112,112]",
            f"model.iqa_weights_dir={tmp_path}",
            "debug=fdr",
        ],
    )
    assert list(cfg.model.iqa_metrics) == ["lpips", "musiq", "niqe", "clipiqa"]
    with caplog.at_level(logging.WARNING, logger="svblur.metrics.iqa"):
        metrics = train(cfg)
    assert np.isfinite(metrics["test/iqa/niqe"]) and metrics["test/iqa/niqe"] > 0
    assert not [k for k in metrics if k.startswith("val/iqa/")]
    assert not [k for k in metrics if k.startswith("test/iqa/") and k != "test/iqa/niqe"]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert {line.split()[2] for line in skipped} == {"lpips", "musiq", "clipiqa"}
    assert all(str(tmp_path) in line for line in skipped)


# ---------------------------------------------------------------------- svblur-predict


def test_svblur_predict_runs_on_a_latent_checkpoint(sd_folder, tmp_path, monkeypatch):
    from svblur.checkpoints import build_network

    config = {
        "_target_": "svblur.models.LatentDiffusionSR",
        "pretrained": str(sd_folder),
        **TINY_OPTIONS,
        "condition": "svkr",
        "estimator": TINY_SVKR,
    }
    torch.manual_seed(0)
    task = DiffusionSRTask(
        build_network(config), condition="svkr", optimizer=partial(torch.optim.AdamW, lr=1e-4)
    )
    task.net_config = config
    with torch.no_grad():  # as after training: the injections have moved
        for injection in task.net.injections:
            injection.gamma.weight.normal_(std=0.05)
    checkpoint = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(checkpoint)
    record = checkpoint[RECORD_KEY]["net"]
    assert record["pretrained"] == str(sd_folder.resolve()) and not record["allow_download"]
    assert not [k for k in checkpoint["state_dict"] if k.startswith(("net.unet.", "net.vae."))]
    ckpt = tmp_path / "latent.ckpt"
    torch.save(checkpoint, ckpt)

    loaded = load_network(ckpt)  # frozen weights from the folder, the rest from the file
    assert loaded.kind == "diffusion_sr" and isinstance(loaded.net, LatentDiffusionSR)
    for key, value in task.net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[key], value), key
    for key, value in _frozen_state(task.net).items():
        assert torch.equal(_frozen_state(loaded.net)[key], value), key
    # A record written before load_network kept local folders: pretrained_folder instead.
    old_record = {**record, "pretrained": False, "pretrained_folder": record["pretrained"]}
    torch.save({**checkpoint, RECORD_KEY: {**checkpoint[RECORD_KEY], "net": old_record}}, ckpt)
    assert load_network(ckpt).net.pretrained_folder == str(sd_folder.resolve())

    _predict_reproducibly(monkeypatch, tmp_path, ckpt, "latent_diffusion_sr")


def test_load_network_keeps_only_an_existing_local_folder_as_pretrained(tmp_path):
    from svblur.checkpoints.loading import _without_downloads

    weights = tmp_path / "hrnet.pth"  # a backbone checkpoint: the network's file has it
    weights.write_bytes(b"")
    config = {
        "pretrained": True,
        "backbone": {"pretrained": "timm"},
        "parts": [
            {"pretrained": str(weights)},
            {"pretrained": str(tmp_path)},
            {"pretrained": "stabilityai/stable-diffusion-2-1-base"},
            {"pretrained": str(tmp_path / "gone")},
            {"pretrained": ""},
        ],
    }
    assert _without_downloads(config) == {
        "pretrained": False,
        "backbone": {"pretrained": False},
        "parts": [
            {"pretrained": False},
            {"pretrained": str(tmp_path)},
            {"pretrained": False},
            {"pretrained": False},
            {"pretrained": False},
        ],
    }
