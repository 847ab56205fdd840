"""Tiled inference and the ``svblur-predict`` app (tiny untrained networks, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image

from svblur.cli.predict import predict
from svblur.degradation import blur_map_from_png
from svblur.inference import TiledPredictor, tile_starts, tile_weights
from svblur.models import CMOS, RRDBSFT, BlindSR

from .conftest import CONFIG_DIR, TINY_BLIND_NET


def tiny_blind_sr(num_classes: int = 6) -> BlindSR:
    torch.manual_seed(0)
    cmos = CMOS(num_classes=num_classes, window_size=(4, 5), channels_last=False)
    sr = RRDBSFT(
        num_features=8,
        num_blocks=1,
        growth_channels=4,
        prior_channels=8,
        gia_groups=2,
        window_size=(8, 8),
    )
    return BlindSR(cmos, sr).eval()


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    return float(10 * torch.log10(peak**2 / (a - b).pow(2).mean()))


def test_tile_starts_cover_the_image_with_the_overlap():
    for length, tile, overlap in [
        (100, 32, 8),
        (33, 32, 8),
        (32, 32, 8),
        (10, 32, 8),
        (257, 64, 16),
    ]:
        starts = tile_starts(length, tile, overlap)
        size = min(tile, length)
        assert starts[0] == 0 and starts[-1] + size == length
        assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))
    weights = tile_weights((8, 8), 4, (True, False, False, True))
    assert weights[0, 0] < weights[4, 0] and weights[-1, 0] == 1 and weights[4, -1] < 1


def test_tiled_and_untiled_predictions_agree():
    net = tiny_blind_sr()
    lr = torch.rand(1, 3, 30, 42, generator=torch.Generator().manual_seed(1))

    def run(x):
        out = net(x)
        return {"sr": out["sr"], "blur": out["blur"], "seg": out["seg"]}

    whole = TiledPredictor(run, tile_size=64, overlap=8)(lr)
    sizes: list[tuple[int, int]] = []

    def run_spy(x):
        sizes.append(tuple(x.shape[-2:]))
        return run(x)

    tiled = TiledPredictor(run_spy, tile_size=24, overlap=8)(lr)
    assert len(sizes) == 6 and max(max(s) for s in sizes) <= 24  # bounded tiles
    assert tiled["sr"].shape == (3, 120, 168) and tiled["seg"].shape == (120, 168)
    assert psnr(tiled["sr"], whole["sr"]) >= 40.0
    assert tiled["seg"].dtype == torch.int64


def _fake(fail_above: int | None = None, nan_in_half: bool = False):
    calls: list[tuple[int, int]] = []

    def fn(x):
        calls.append(tuple(x.shape[-2:]))
        if fail_above is not None and max(x.shape[-2:]) > fail_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        sr = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        if nan_in_half and torch.is_autocast_enabled("cpu"):
            sr = sr * float("nan")
        return {"sr": sr, "blur": sr[:, :1], "seg": torch.cat([sr[:, :1], 1 - sr[:, :1]], 1)}

    return fn, calls


def test_out_of_memory_shrinks_tiles_and_nan_falls_back_to_fp32():
    lr = torch.rand(1, 3, 40, 50)
    fn, calls = _fake(fail_above=20)
    predictor = TiledPredictor(fn, scale=2, tile_size=64, overlap=4, min_tile_size=8)
    out = predictor(lr)
    assert predictor.used_tile_size == 16 and max(max(c) for c in calls[-4:]) <= 16
    torch.testing.assert_close(out["sr"], torch.nn.functional.interpolate(lr, scale_factor=2)[0])
    fn, _ = _fake(fail_above=2)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        TiledPredictor(fn, scale=2, tile_size=16, overlap=4, min_tile_size=8)(lr)

    fn, _ = _fake(nan_in_half=True)
    predictor = TiledPredictor(fn, scale=2, tile_size=32, overlap=4, precision="bf16")
    out = predictor(lr)
    assert predictor.fp32_fallbacks > 0 and torch.isfinite(out["sr"]).all()


def _predict_cfg(tmp_path: Path, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name="predict", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.log_dir = str(tmp_path / "logs")
            del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


def test_predict_app_on_a_folder_of_mixed_images(tmp_path):
    net = tiny_blind_sr(num_classes=6)
    ckpt = tmp_path / "stage3.ckpt"  # a Lightning checkpoint of a stage-3 system
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(photos / "odd.png")
    Image.fromarray(rng.integers(0, 255, (16, 2050, 3), dtype=np.uint8)).save(photos / "wide.jpg")
    Image.fromarray(rng.integers(0, 255, (9, 12), dtype=np.uint8)).save(photos / "gray.png")
    (photos / "broken.png").write_bytes(b"not a png")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    cfg = _predict_cfg(
        tmp_path,
        [f"ckpt={ckpt}", f"input={photos}", f"output={out}", "tile_size=1100", "tile_overlap=16"]
        + TINY_BLIND_NET,
    )
    summary = predict(cfg)

    assert sorted(summary["processed"]) == ["gray.png", "odd.png", "wide.jpg"]
    assert list(summary["failed"]) == ["broken.png"] and summary["ignored"] == ["notes.txt"]
    assert json.loads((out / "summary.json").read_text())["processed"] == summary["processed"]
    for stem, (h, w) in {"odd": (37, 53), "wide": (16, 2050), "gray": (9, 12)}.items():
        with Image.open(out / f"{stem}_sr.png") as sr:
            assert sr.size == (4 * w, 4 * h) and sr.mode == "RGB"
        with Image.open(out / f"{stem}_seg.png") as seg:
            assert seg.mode == "P" and seg.size == (4 * w, 4 * h)
            labels = np.asarray(seg)
        with Image.open(out / f"{stem}_blur.png") as colour:
            assert colour.size[1] == 4 * h and colour.size[0] > 4 * w  # map + colour bar
        sigma = blur_map_from_png(out / f"{stem}_blur_x10.png")
        assert sigma.shape == (4 * h, 4 * w)
        if stem == "odd":  # one unpadded tile: the files hold the network's own outputs
            rgb = np.asarray(Image.open(photos / "odd.png"), np.float32) / 255
            with torch.no_grad():
                expected = net(torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None])
            np.testing.assert_array_equal(labels, expected["seg"][0].argmax(0).numpy())
            reference = np.floor(expected["blur"][0, 0].clamp(min=0).numpy() * 10 + 0.5) / 10
            np.testing.assert_allclose(sigma, reference, atol=0.1 + 1e-6)


def test_predict_reports_a_checkpoint_of_another_model(tmp_path):
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"net.foo.weight": torch.zeros(2)}}, ckpt)
    (tmp_path / "in.png").write_bytes(b"")
    cfg = _predict_cfg(tmp_path, [f"ckpt={ckpt}", f"input={tmp_path / 'in.png'}", "output=x"])
    with pytest.raises(ValueError, match=r"missing keys.*unexpected keys.*foo\.weight"):
        predict(cfg)


# ------------------------------------------------ every checkpoint the library trains


def _photo(folder: Path, size: tuple[int, int] = (19, 21)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / "p.png")
    return folder


@pytest.mark.parametrize(
    ("model", "outputs"),
    [("cmos", {"blur", "blur_x10", "seg"}), ("manet", {"blur", "blur_x10"})],
)
def test_predict_with_the_last_checkpoint_of_a_stage1_run(make_cfg, tmp_path, model, outputs):
    """``make_train``'s checkpoint predicts maps: the network is rebuilt from the checkpoint's
    own record, not from predict's model config (default blind_sr)."""
    cfg = make_cfg(
        "train", [f"model={model}", "++trainer.max_steps=2", "trainer.max_epochs=1", "test=false"]
    )
    from svblur.cli.train import train

    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    photos = _photo(tmp_path / "photos")
    out = tmp_path / "pred"
    summary = predict(_predict_cfg(tmp_path, [f"ckpt={ckpt}", f"input={photos}", f"output={out}"]))
    assert summary["kind"] == "blur_semantics" and summary["processed"] == ["p.png"]
    written = {p.name.removeprefix("p_").removesuffix(".png") for p in out.glob("p_*.png")}
    assert written == outputs
    sigma = blur_map_from_png(out / "p_blur_x10.png")
    assert sigma.shape == (4 * 19, 4 * 21)

    # the maps are the network's own: rebuild it from the checkpoint and compare
    from svblur.checkpoints import load_network

    loaded = load_network(ckpt)
    assert loaded.recorded and loaded.kind == "blur_semantics"
    lr = torch.from_numpy(np.asarray(Image.open(photos / "p.png"), np.float32) / 255)
    with torch.no_grad():
        expected = loaded.net(lr.permute(2, 0, 1)[None])
    np.testing.assert_allclose(
        sigma, np.round(expected["blur"][0, 0].clamp(min=0).numpy() * 10) / 10, atol=0.1 + 1e-6
    )
    if "seg" in outputs:
        labels = np.asarray(Image.open(out / "p_seg.png"))
        top2 = expected["seg"][0].topk(2, dim=0).values
        clear = (top2[0] - top2[1] > 1e-5).numpy()  # a barely trained net has near-ties
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(labels[clear], expected["seg"][0].argmax(0).numpy()[clear])


def test_predict_reads_the_kind_of_an_older_checkpoint_from_its_hyperparameters(tmp_path):
    """A stage-1 checkpoint without svblur's record: the kind comes from the saved
    hyper-parameters and the network from the model config the user names."""
    torch.manual_seed(0)
    net = CMOS(num_classes=5, window_size=(4, 5), channels_last=False)
    ckpt = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"num_classes": 5, "aux_weight": 0.5, "blur_norm": 5.0},
        },
        ckpt,
    )
    photos = _photo(tmp_path / "photos")
    overrides = [f"ckpt={ckpt}", f"input={photos}", f"output={tmp_path / 'o'}"]
    summary = predict(
        _predict_cfg(tmp_path, [*overrides, "model=cmos", "model.net.window_size=[4,5]"])
    )
    assert summary["kind"] == "blur_semantics"
    assert not (tmp_path / "o" / "p_sr.png").exists() and (tmp_path / "o" / "p_seg.png").exists()
    with pytest.raises(ValueError, match="records no network: pass its model config"):
        predict(_predict_cfg(tmp_path, overrides))  # default model=blind_sr does not fit


def test_predict_refuses_a_stage2_checkpoint_with_a_clear_message(tmp_path):
    sr = RRDBSFT(num_features=8, num_blocks=1, growth_channels=4, prior_channels=8,
                 gia_groups=2, window_size=(8, 8))  # fmt: skip
    ckpt = tmp_path / "stage2.ckpt"
    config = {
        "_target_": "svblur.models.RRDBSFT",
        "num_features": 8,
        "num_blocks": 1,
        "growth_channels": 4,
        "prior_channels": 8,
        "gia_groups": 2,
        "window_size": [8, 8],
    }
    from svblur.checkpoints import network_record

    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in sr.state_dict().items()},
            "svblur": network_record("NonBlindSRTask", config),
        },
        ckpt,
    )
    photos = _photo(tmp_path / "photos")
    cfg = _predict_cfg(tmp_path, [f"ckpt={ckpt}", f"input={photos}", f"output={tmp_path / 'o'}"])
    with pytest.raises(ValueError, match="stage-2 .*needs blur and semantic maps"):
        predict(cfg)


def test_predict_with_a_kernel_head_draws_the_kernel_field(make_cfg, tmp_path):
    """A MANet kernel-head checkpoint (degradation=motion_sv): the kernels are blended on
    the LR grid and drawn as a picture over the image."""
    cfg = make_cfg(
        "train",
        ["degradation=motion_sv", "++trainer.max_steps=1", "trainer.max_epochs=1", "test=false"],
    )
    from svblur.cli.train import train

    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    photos = _photo(tmp_path / "photos", (20, 24))
    out = tmp_path / "pred"
    cfg = _predict_cfg(
        tmp_path,
        [f"ckpt={ckpt}", f"input={photos}", f"output={out}", "tile_size=12", "tile_overlap=4"],
    )
    summary = predict(cfg)
    assert summary["kind"] == "blur_semantics" and summary["processed"] == ["p.png"]
    assert sorted(p.name for p in out.glob("p_*.png")) == ["p_kernels.png"]
    with Image.open(out / "p_kernels.png") as picture:
        assert picture.size == (4 * 24, 4 * 20)


def test_lr_grid_outputs_are_blended_at_the_lr_size():
    lr = torch.rand(1, 3, 30, 42, generator=torch.Generator().manual_seed(2))

    def fn(x):  # a pixel-wise map on the LR grid and an x2 image
        return {"sr": F.interpolate(x, scale_factor=2), "kernels": torch.cat([x, 1 - x], 1)}

    whole = TiledPredictor(fn, scale=2, tile_size=64, overlap=8, lr_keys=("kernels",))(lr)
    tiled = TiledPredictor(fn, scale=2, tile_size=16, overlap=6, lr_keys=("kernels",))(lr)
    assert tiled["kernels"].shape == (6, 30, 42) and tiled["sr"].shape == (3, 60, 84)
    torch.testing.assert_close(tiled["kernels"], whole["kernels"])
    torch.testing.assert_close(tiled["kernels"][:3], lr[0])


# ------------------------------------------------ loading by kind (svblur.inference)


def _save_recorded(path: Path, net: torch.nn.Module, config: dict, system: str, kind=None):
    from svblur.checkpoints import network_record

    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "svblur": network_record(system, config, kind)}, path)
    return path


def test_a_gan_generator_predicts_its_sr_image_without_hydra(tmp_path):
    """An older GAN checkpoint (recorded kind ``blind_sr``) loads as ``gan_sr``; the library
    API alone writes the generator's own SR image and nothing else."""
    from svblur.inference import load_for_prediction, predict_images
    from svblur.models import RRDBNet

    torch.manual_seed(0)
    config = {"_target_": "svblur.models.RRDBNet", "num_features": 8, "num_blocks": 1,
              "growth_channels": 4, "scale": 2}  # fmt: skip
    net = RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=2).eval()
    ckpt = _save_recorded(tmp_path / "gan.ckpt", net, config, "GANSRTask", kind="blind_sr")
    loaded = load_for_prediction(ckpt)
    assert loaded.kind == "gan_sr"
    photos = _photo(tmp_path / "photos")
    out = tmp_path / "out"
    summary = predict_images(loaded, [photos / "p.png"], out, device=torch.device("cpu"))
    assert summary["kind"] == "gan_sr" and summary["processed"] == ["p.png"]
    assert sorted(p.name for p in out.iterdir()) == ["p_sr.png", "summary.json"]
    rgb = np.asarray(Image.open(photos / "p.png"), np.float32) / 255
    with torch.no_grad():
        expected = net(torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None])[0]
    expected = (expected.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "p_sr.png")), expected)


@pytest.mark.parametrize(
    ("system", "kind", "message"),
    [
        ("KernelEstimationTask", None, "kernel estimator .*needs a depth map"),
        ("SVKRTask", None, "kernel-regression .*assemble_svkr"),
        ("SomeTask", "kernel_soup", "kind 'kernel_soup' \\(an unknown kind\\)"),
    ],
)
def test_kinds_a_photo_cannot_drive_are_refused_naming_the_checkpoint(
    tmp_path, system, kind, message
):
    from svblur.errors import InputError
    from svblur.inference import load_for_prediction
    from svblur.models import DKENet

    config = {"_target_": "svblur.models.DKENet", "kernel_size": 5, "channels": [4, 8],
              "depth_channels": 4, "sft_channels": 4}  # fmt: skip
    net = DKENet(kernel_size=5, channels=(4, 8), depth_channels=4, sft_channels=4)
    ckpt = _save_recorded(tmp_path / f"{system}.ckpt", net, config, system, kind)
    with pytest.raises(InputError, match=f"{system}.ckpt: .*{message}"):
        load_for_prediction(ckpt)


def test_moved_names_keep_their_old_homes():
    from svblur import inference
    from svblur.cli import predict as cli
    from svblur.ops import colour, pictures, tiles
    from svblur.systems import visualize

    assert cli.find_inputs is inference.find_inputs and cli.save_outputs is inference.save_outputs
    assert cli._unique_stems is inference.unique_stems and cli._device is inference.resolve_device
    assert cli.blur_colorbar_image is pictures.blur_colorbar_image
    assert (
        inference.tile_starts is tiles.tile_starts and inference.tile_weights is tiles.tile_weights
    )
    assert visualize.palette is colour.palette
    assert visualize.kernel_field_picture is pictures.kernel_field_picture
