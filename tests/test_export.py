"""ONNX export (``svblur-export``): tiny RRDBNet and CMOS checkpoints exported, run in
onnxruntime on images of another size than the traced one and compared with PyTorch;
checkpoints that do not export are refused by name, and a failed export leaves no file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from svblur.checkpoints import LoadedNetwork, network_record, save_state_dict
from svblur.cli import export as cli
from svblur.errors import InputError
from svblur.inference.export import OnnxExportError, export_onnx, load_for_export
from svblur.models import CMOS, RRDBSFT, DKENet, RRDBNet
from svblur.nn.blocks import PooledBatchNorm2d

from .conftest import CONFIG_DIR

onnx = pytest.importorskip("onnx", reason="the onnx extra: pip install -e '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install -e '.[onnx]'")

TINY_RRDBNET = {"num_features": 8, "num_blocks": 1, "growth_channels": 4, "scale": 4}
TINY_CMOS = {"num_classes": 3, "window_size": [4, 5], "channels_last": False}


def _rrdbnet(seed: int) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(**TINY_RRDBNET).eval()


def _cmos() -> CMOS:
    """A tiny CMOS that computes like a trained one: BatchNorm statistics of its own
    activations (random weights with the initial statistics reach 1e4 inside and round at
    1e-4 in float32), heads scaled to outputs of about 1."""
    torch.manual_seed(0)
    net = CMOS(**TINY_CMOS).train()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average
        if isinstance(module, PooledBatchNorm2d):
            module.eval()  # a pooled vector per image: too few values for statistics
    with torch.no_grad():
        for _ in range(2):
            net(torch.rand(2, 3, 64, 80))
        for head in net.output_heads.values():
            head.classifier.weight.mul_(0.1)
    return net.eval()


def _recorded(path: Path, net: torch.nn.Module, config: dict, system: str, kind: str) -> Path:
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "svblur": network_record(system, config, kind)}, path)
    return path


def _export_cfg(tmp_path: Path, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            cfg = compose(config_name="export", overrides=overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                cfg.paths.output_dir = str(tmp_path / "run")
                cfg.paths.log_dir = str(tmp_path / "logs")
                del cfg.hydra
    finally:
        GlobalHydra.instance().clear()
    return cfg


def _run(model: Path | ort.InferenceSession, lr: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of the ONNX file (or an open session of it) on ``lr``, by name."""
    session = (
        model
        if isinstance(model, ort.InferenceSession)
        else ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    )
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, {"lr": lr.numpy()})
    return {name: torch.from_numpy(out) for name, out in zip(names, outputs)}


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _pbasr_checkpoint(path: Path) -> tuple[Path, RRDBNet]:
    """A PBaSRTask checkpoint (two branches, their mean evaluated) and that mean."""
    general, blur = _rrdbnet(1), _rrdbnet(2)
    config = {"_target_": "svblur.models.RRDBNet", **TINY_RRDBNET}
    record = {**network_record("PBaSRTask", config, "gan_sr"), "average_of": ["general.", "blur."]}
    state = {f"general.{k}": v for k, v in general.state_dict().items()}
    state |= {f"blur.{k}": v for k, v in blur.state_dict().items()}
    torch.save({"state_dict": state, "svblur": record}, path)
    merged = _rrdbnet(0)
    merged.load_state_dict(
        {k: (v + blur.state_dict()[k]) / 2 for k, v in general.state_dict().items()}
    )
    return path, merged


@pytest.mark.parametrize("form", ["exported state dict", "PBaSR checkpoint"])
def test_an_rrdbnet_generator_runs_in_onnxruntime_at_any_size(tmp_path, form):
    if form == "exported state dict":  # what a GAN system's export writes: no record
        net = _rrdbnet(0)
        ckpt = tmp_path / "generator.pth"
        save_state_dict(net.state_dict(), ckpt)
    else:
        ckpt, net = _pbasr_checkpoint(tmp_path / "pbasr.ckpt")
    output = tmp_path / "onnx" / "generator.onnx"
    result = cli.export(_export_cfg(tmp_path, [f"ckpt={ckpt}", f"output={output}"]))
    assert (
        result.kind == "gan_sr" and result.outputs == ("sr",) and result.verified_size == (33, 31)
    )

    lr = torch.rand(2, 3, 19, 27, generator=torch.Generator().manual_seed(3))
    sr = _run(output, lr)["sr"]
    with torch.no_grad():
        expected = net(lr)
    assert sr.shape == (2, 3, 76, 108)
    assert (sr - expected).abs().max() <= 1e-4
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    metadata = _metadata(output)
    assert metadata["svblur.kind"] == "gan_sr" and metadata["svblur.size_multiple"] == "1,1"
    assert '"num_features": 8' in metadata["svblur.network"]


def test_cmos_runs_in_onnxruntime_at_sizes_that_are_no_multiple_of_its_window(tmp_path):
    net = _cmos()
    config = {"_target_": "svblur.models.CMOS", **TINY_CMOS}
    ckpt = _recorded(tmp_path / "stage1.ckpt", net, config, "BlurSemanticsTask", "blur_semantics")
    output = tmp_path / "cmos.onnx"
    overrides = [f"ckpt={ckpt}", f"output={output}", "size=[64,96]"]
    result = cli.export(_export_cfg(tmp_path, overrides))
    # windows of 4 x 5 at 1/8 of the input used to need multiples of (32, 40): no longer
    assert result.size_multiple == (1, 1) and result.example_size == (64, 96)
    assert result.verified_size == (65, 95) and result.max_error <= 1e-4
    assert result.outputs == ("blur", "seg")  # the auxiliary heads are left out

    # 72 x 104 pads the 9 x 13 coarsest map up to 12 x 15; 19 x 27 pads maps of 3 x 4
    # pixels, more than their size (one session: creating it takes seconds)
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(4)
    for height, width in ((72, 104), (19, 27)):
        lr = torch.rand(2, 3, height, width, generator=generator)
        got = _run(session, lr)
        with torch.no_grad():
            expected = net(lr)
        assert set(got) == {"blur", "seg"}
        assert got["blur"].shape == (2, 1, 4 * height, 4 * width)
        assert got["seg"].shape == (2, 3, 4 * height, 4 * width)
        for name in ("blur", "seg"):
            assert (got[name] - expected[name]).abs().max() <= 1e-4, (name, height, width)
    assert _metadata(output)["svblur.size_multiple"] == "1,1"

    # the traced size must be large enough for every backbone scale to differ
    loaded = load_for_export(ckpt)
    with pytest.raises(InputError, match=re.escape("at least 16 x 16 pixels, e.g. size=[16, 70]")):
        export_onnx(loaded, tmp_path / "small.onnx", size=[8, 70])
    assert not (tmp_path / "small.onnx").exists()


def _kernel_estimator(path: Path) -> Path:
    config = {"_target_": "svblur.models.DKENet", "kernel_size": 5, "channels": [4, 8],
              "depth_channels": 4, "sft_channels": 4}  # fmt: skip
    net = DKENet(kernel_size=5, channels=(4, 8), depth_channels=4, sft_channels=4)
    return _recorded(path, net, config, "KernelEstimationTask", "kernel_estimation")


def _non_blind_sr(path: Path) -> Path:
    config = {"_target_": "svblur.models.RRDBSFT", "num_features": 8, "num_blocks": 1,
              "growth_channels": 4, "prior_channels": 8, "gia_groups": 2,
              "window_size": [8, 8]}  # fmt: skip
    net = RRDBSFT(**{k: v for k, v in config.items() if k != "_target_"})
    return _recorded(path, net, config, "NonBlindSRTask", "non_blind_sr")


def _basicsr_layout(path: Path) -> Path:
    state = {k.replace(".dense", ".rdb"): v for k, v in _rrdbnet(0).state_dict().items()}
    torch.save({"params_ema": state}, path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_kernel_estimator, "kind 'kernel_estimation' with a DKENet cannot be exported to ONNX"),
        (_non_blind_sr, "kind 'non_blind_sr' with a RRDBSFT cannot be exported to ONNX"),
        (_basicsr_layout, "an ESRGAN-family file .*convert it first with svblur-convert"),
    ],
    ids=["kernel estimation", "non-blind SR", "BasicSR layout"],
)
def test_the_command_refuses_what_does_not_export_naming_the_checkpoint(
    tmp_path, capsys, make, message
):
    ckpt = make(tmp_path / "model.ckpt")
    output = tmp_path / "model.onnx"
    with pytest.raises(SystemExit) as exit_info:
        cli._hydra_main(_export_cfg(tmp_path, [f"ckpt={ckpt}", f"output={output}"]))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"svblur-export: error: {ckpt}: ") and len(error.splitlines()) == 1
    assert re.search(message, error), error
    if "convert" not in message:
        assert "exports the kinds gan_sr (RRDBNet); blur_semantics (CMOS)" in error
    assert not output.exists()


class _SizeInPython(torch.nn.Module):
    """Scales by its input's width as a Python number: the tracer fixes it."""

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return lr * int(lr.shape[-1])


def test_a_failed_export_leaves_no_file_and_the_old_one_untouched(tmp_path, monkeypatch):
    output = tmp_path / "model.onnx"
    output.write_bytes(b"the previous export")

    # the check in onnxruntime finds a graph that does not generalize
    loaded = LoadedNetwork(_SizeInPython(), "gan_sr", {}, recorded=True)
    with pytest.raises(OnnxExportError, match=f"{output}: output sr .*size \\(33, 31\\)"):
        export_onnx(loaded, output)

    # the exporter fails half-way through writing
    def broken_export(model, args, path, **kwargs):
        Path(path).write_bytes(b"half an ONNX file")
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_onnx(LoadedNetwork(_rrdbnet(0), "gan_sr", {}, recorded=True), output)

    assert output.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
