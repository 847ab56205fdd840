"""SSR stages 1 and 2 through the Hydra app on the built-in data (degradation=gaussian_sv),
the SVKR assembled from their checkpoints, its evaluation, and the HR-folder variant."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from PIL import Image

from svblur.checkpoints import load_network
from svblur.cli.predict import predict
from svblur.degradation import GaussianFieldBlur
from svblur.errors import CheckpointError, InputError
from svblur.experiments.training import evaluate, train
from svblur.models import SVKR, GroundTruthDepth, SMPDepthNet
from svblur.models.ssr import ConstantDepth, fit_kernel_pca
from svblur.systems.ssr import assemble_svkr, evaluate_svkr, load_svkr, svkr_scores

from .conftest import CONFIG_DIR, TINY
from .helpers import epoch_losses
from .test_predict import _predict_cfg

K = 5  # kernel size: 25 taps keep every step cheap
SMALL = [
    "data.hr_size=[32,40]",
    f"degradation.blur.kernel_size={K}",
    "callbacks=none",
    "+callbacks.keep._target_=tests.test_ssr_app.KeepModel",
]
TINY_DKENET = [
    "model.net.channels=[8,8]",
    "model.net.depth_channels=4",
    "model.net.sft_channels=4",
    "model.optimizer.lr=3e-3",
]
TINY_RRDB = [
    "model.net.num_features=8",
    "model.net.num_blocks=1",
    "model.net.growth_channels=4",
    "model.net.prior_channels=8",
    "model.net.kernel_channels=6",
    "model.pca_kernels=300",
    "model.log_images=0",
    "model.optimizer.lr=3e-3",
]
TINY_STAGE1 = ["experiment=synthetic_ssr_stage1", *SMALL, *TINY_DKENET]
TINY_STAGE2 = ["experiment=synthetic_ssr_stage2", *SMALL, *TINY_RRDB]


class KeepModel(L.Callback):
    """Keep the trained LightningModule (the in-memory networks)."""

    kept: ClassVar[list[L.LightningModule]] = []

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        KeepModel.kept.append(pl_module)


def _compose(
    overrides: list[str], out: Path, tiny: bool = True, config_name: str = "train"
) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(
            config_name=config_name,
            overrides=(TINY if tiny else TINY[-4:]) + overrides,
            return_hydra_config=True,
        )
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
            cfg.paths.log_dir = str(out / "logs")
            del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


class Stage:
    def __init__(self, cfg: DictConfig, metrics: dict[str, float], ckpt: Path, model) -> None:
        self.cfg, self.metrics, self.ckpt, self.model = cfg, metrics, ckpt, model


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Stage]:
    torch.set_num_threads(1)
    runs = {}
    for stage, overrides in ((1, TINY_STAGE1), (2, TINY_STAGE2)):
        out = tmp_path_factory.mktemp(f"ssr_stage{stage}")
        cfg = _compose([*overrides, "trainer.max_epochs=8", "data.augment=false"], out)
        ckpt = out / f"stage{stage}.ckpt"
        KeepModel.kept.clear()
        metrics = train(cfg, weights_path=ckpt)
        runs[stage] = Stage(cfg, metrics, ckpt, KeepModel.kept[-1])
    return runs


def test_stage1_trains_dkenet_on_the_kernel_field_and_its_loss_falls(stages, tmp_path):
    run = stages[1]
    assert run.cfg.model.net._target_ == "svblur.models.DKENet"
    assert run.cfg.degradation.blur._target_ == "svblur.degradation.GaussianFieldBlur"
    losses = epoch_losses(Path(run.cfg.paths.output_dir))
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0], losses
    # kernel L1 lies in [0, 2]; with ground-truth depth there is no depth loss
    assert 0.0 < run.metrics["test/kernels/l1"] < 2.0
    assert "train/loss/depth_epoch" not in run.metrics and "test/depth/l1" not in run.metrics
    # svblur-eval measures the checkpoint alike
    cfg = _compose([*TINY_STAGE1, f"ckpt_path={run.ckpt}"], tmp_path, config_name="eval")
    metrics = evaluate(cfg)
    assert metrics["test/kernels/l1"] == pytest.approx(run.metrics["test/kernels/l1"], rel=1e-5)


def test_stage2_trains_on_kernel_codes_and_its_loss_falls(stages):
    run = stages[2]
    losses = epoch_losses(Path(run.cfg.paths.output_dir))
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0], losses
    assert run.metrics["test/sr/psnr_y"] > 10.0


def test_stage2_pca_basis_is_fitted_to_the_degradation_and_survives_the_checkpoint(stages):
    run = stages[2]
    state = torch.load(run.ckpt, map_location="cpu", weights_only=True)["state_dict"]
    blur = instantiate(run.cfg.degradation.blur, _convert_="all")
    assert blur == GaussianFieldBlur(kernel_size=K, model="camera")
    expected = fit_kernel_pca(blur, 300, 6, seed=0)
    assert torch.equal(state["pca_components"], expected.components)
    assert torch.equal(state["pca_mean"], run.model.pca_mean.cpu())
    # a task built with another basis takes the checkpoint's: loading never refits
    cfg = run.cfg.model.copy()
    with open_dict(cfg):
        cfg.pca_seed = 7
    other = instantiate(cfg, _convert_="all")
    assert not torch.equal(other.pca_components, expected.components)
    other.load_state_dict(state)
    assert torch.equal(other.pca.components, expected.components)
    # the network alone rebuilds from the checkpoint's record (svblur-predict's loader)
    loaded = load_network(run.ckpt)
    assert loaded.kind == "non_blind_sr" and loaded.net.kernel_channels == 6


def test_svkr_from_checkpoints_equals_svkr_from_the_trained_networks(stages):
    first, second = stages[1].model, stages[2].model
    assert isinstance(first.depth_estimator, GroundTruthDepth)
    loaded = load_svkr(stages[1].ckpt, stages[2].ckpt, iterations=3, gamma=0.9, freeze=True)
    assert not any(p.requires_grad for p in loaded.parameters())
    in_memory = SVKR(
        first.net, first.depth_estimator, second.net, iterations=3, gamma=0.9, pca=second.pca
    ).eval()
    gen = torch.Generator().manual_seed(0)
    lr = torch.rand(2, 3, 8, 10, generator=gen)
    depth = torch.rand(2, 1, 32, 40, generator=gen) * 5000 + 500
    with torch.no_grad():
        a, b = loaded(lr, depth=depth), in_memory(lr, depth=depth)
    assert len(a["sr_steps"]) == len(a["kernel_steps"]) == 3
    for key in ("sr", "kernels", "depth"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    torch.testing.assert_close(a["kernels"].sum(1), torch.ones(2, 32, 40))
    # the stages are not interchangeable
    with pytest.raises(CheckpointError, match="stage-1"):
        load_svkr(stages[2].ckpt, stages[2].ckpt)


def test_stage1_checkpoint_records_its_depth_form_and_old_ones_read_as_minmax(stages, tmp_path):
    hparams = torch.load(stages[1].ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["depth_kwargs"] == {
        "form": "defocus",
        "focus_quantile": 0.5,
        "defocus_scale": 30.0,
    }
    depth = load_svkr(stages[1].ckpt, stages[2].ckpt).depth_estimator
    assert isinstance(depth, GroundTruthDepth) and depth.form == "defocus"
    # a checkpoint from before the forms: DKENet was trained on per-image normalized depth
    checkpoint = torch.load(stages[1].ckpt, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["depth_kwargs"] = {}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert load_svkr(tmp_path / "old.ckpt", stages[2].ckpt).depth_estimator.form == "minmax"


def test_stage3_is_conditioned_on_the_depth_form_of_stage1(tmp_path):
    """experiment=synthetic_ssr_stage3's depth condition is what stage 1 gives DKENet: the
    data's depth as GroundTruthDepth's signed defocus, taken as given (no normalization),
    from the ground truth and in the SVKR of model.condition=svkr alike."""
    stage1 = _compose(TINY_STAGE1, tmp_path / "s1")
    overrides = [
        "experiment=synthetic_ssr_stage3",
        *SMALL[:2],
        "model.net.kernel_size=5",
        "model.net.block_channels=[8,16]",
        "model.net.norm_num_groups=4",
        "model.net.encoder_channels={kernel:[4,8],depth:[4,8],lr:[8,16]}",
        "model.net.kernel_code_channels=4",
        "model.net.amf_hidden=8",
    ]
    stage3 = _compose(overrides, tmp_path / "s3")
    estimator = stage3.model.net.estimator
    assert estimator.kernel_estimator.normalize is stage1.model.net.normalize is False
    depth = instantiate(estimator.depth_estimator)
    built = instantiate(stage1.model, _convert_="all").depth_estimator
    assert (depth.form, depth.focus_quantile) == (built.form, built.focus_quantile)
    task = instantiate(stage3.model, _convert_="all")
    datamodule = instantiate(stage3.data, _convert_="all")
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    conditions = task.conditions(batch)
    expected = built(batch["hr"], depth=batch["depth"])
    torch.testing.assert_close(conditions["depth"], expected, rtol=0, atol=0)
    assert torch.equal(conditions["kernels"], batch["kernels"])


def test_assembled_svkr_checkpoint_rebuilds_and_predicts_photos(stages, tmp_path):
    ckpt = assemble_svkr(
        stages[1].ckpt,
        stages[2].ckpt,
        tmp_path / "svkr.ckpt",
        iterations=2,
        depth_estimator="svblur.models.ssr.ConstantDepth",  # photos have no depth
    )
    loaded = load_network(ckpt)
    assert loaded.kind == "blind_sr" and isinstance(loaded.net, SVKR)
    assert isinstance(loaded.net.depth_estimator, ConstantDepth) and loaded.net.iterations == 2
    direct = load_svkr(stages[1].ckpt, stages[2].ckpt, 2, depth_estimator=ConstantDepth())
    lr = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(lr)["sr"], direct(lr)["sr"], rtol=0, atol=0)
    photos = tmp_path / "photos"
    _photos(photos, 1, np.random.default_rng(0))
    out = tmp_path / "out"
    summary = predict(_predict_cfg(tmp_path, [f"ckpt={ckpt}", f"input={photos}", f"output={out}"]))
    assert summary["kind"] == "blind_sr" and summary["processed"] == ["img0.png"]
    with Image.open(out / "img0_sr.png") as sr:
        assert sr.size == (4 * 48, 4 * 40)
    assert (out / "img0_kernels.png").is_file()
    # the stage checkpoints alone cannot predict a photo: one line says what can
    for stage, expected in ((1, "needs a depth map"), (2, "non-blind SR")):
        cfg = _predict_cfg(
            tmp_path, [f"ckpt={stages[stage].ckpt}", f"input={photos}", f"output={out}_{stage}"]
        )
        with pytest.raises(InputError, match=expected):
            predict(cfg)


def test_svkr_evaluation_reports_every_step_with_and_without_depth(stages, tmp_path):
    cfg = _compose(
        [
            "experiment=synthetic_ssr_svkr",
            *SMALL[:2],
            f"model.stage1_ckpt={stages[1].ckpt}",
            f"model.stage2_ckpt={stages[2].ckpt}",
        ],
        tmp_path,
    )
    assert cfg.train is False and cfg.model.iterations == 3 and cfg.model.gamma == 0.9
    metrics = train(cfg)
    for prefix in ("", "no_depth/"):
        for t in (1, 2, 3):
            assert 0.0 < metrics[f"test/{prefix}t{t}/kernels/l1"] < 2.0
            assert metrics[f"test/{prefix}t{t}/sr/psnr_y"] > 10.0
            assert 0.0 < metrics[f"test/{prefix}t{t}/sr/ssim_y"] <= 1.0
    assert metrics["test/sr/psnr_y"] == metrics["test/t3/sr/psnr_y"]
    # with ground-truth depth every estimate is the same: the kernels do not change
    assert metrics["test/t1/kernels/l1"] == pytest.approx(metrics["test/t3/kernels/l1"])
    # the functional twin gives the same numbers over the same test split
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("test")
    svkr = load_svkr(stages[1].ckpt, stages[2].ckpt)
    table = evaluate_svkr(svkr, datamodule.test_dataloader())
    for key in ("t1/kernels/l1", "t3/sr/psnr_y", "no_depth/t2/sr/ssim_y"):
        assert table[key] == pytest.approx(metrics[f"test/{key}"], rel=1e-5)


def test_svkr_scores_follow_the_refinement_when_depth_comes_from_the_image(stages):
    first, second = stages[1].model, stages[2].model
    torch.manual_seed(0)
    depth_net = SMPDepthNet(encoder_depth=3, decoder_channels=(16, 8, 4)).eval()
    svkr = SVKR(first.net, depth_net, second.net, iterations=3, pca=second.pca).eval()
    gen = torch.Generator().manual_seed(1)
    batch = {
        "lr": torch.rand(2, 3, 8, 10, generator=gen),
        "hr": torch.rand(2, 3, 32, 40, generator=gen),
    }
    field = torch.rand(2, K * K, 32, 40, generator=gen)
    batch["kernels"] = field / field.sum(1, keepdim=True)
    scores = svkr_scores(svkr, batch)
    assert set(scores) == {
        f"{prefix}t{t}/{name}"
        for prefix in ("", "no_depth/")
        for t in (1, 2, 3)
        for name in ("kernels/l1", "sr/psnr_y", "sr/ssim_y")
    }
    # K[1] = K[0] (from the depth of the bicubic image); then the depth of each SR image
    # moves the kernels
    assert not torch.equal(scores["t1/kernels/l1"], scores["t2/kernels/l1"])
    assert not torch.equal(scores["t2/kernels/l1"], scores["t3/kernels/l1"])
    # without depth nothing is refined, and the estimate differs from the one with depth
    assert torch.equal(scores["no_depth/t1/kernels/l1"], scores["no_depth/t3/kernels/l1"])
    assert not torch.equal(scores["no_depth/t1/kernels/l1"], scores["t1/kernels/l1"])


def test_stage1_trains_a_depth_network_with_its_own_loss(tmp_path):
    cfg = _compose(
        [
            *TINY_STAGE1,
            "model.depth_estimator=svblur.models.SMPDepthNet",
            "+model.depth_kwargs.encoder_depth=3",
            "+model.depth_kwargs.decoder_channels=[16,8,4]",
            "model.depth_from=lr",
            "debug=fdr",
        ],
        tmp_path,
    )
    metrics = train(cfg)
    assert 0.0 < metrics["train/loss/depth"] < 1.0
    assert metrics["train/loss"] == pytest.approx(
        metrics["train/loss/depth"] + metrics["train/loss/kernels"], rel=1e-5
    )
    assert 0.0 <= metrics["test/depth/l1"] <= 1.0
    task = KeepModel.kept[-1]
    trained = {id(p) for p in task.trainable_parameters()}
    assert all(id(p) in trained for p in task.depth_estimator.parameters())


def test_stage1_reads_a_transformers_depth_model_from_a_local_folder_only(tmp_path):
    overrides = [
        *TINY_STAGE1,
        "model.depth_estimator=svblur.models.HFDepth",
        "+model.depth_kwargs.path=/nonexistent/dpt",
        "debug=fdr",
    ]
    with pytest.raises(InstantiationException, match="never downloads"):
        train(_compose(overrides, tmp_path))


def _photos(root: Path, count: int, rng: np.random.Generator) -> None:
    root.mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{i}.png")


def _tiny_depth_model(folder: Path) -> Path:
    """A tiny random DPT (transformers) with its image processor, saved as a local model
    folder is (``save_pretrained``): what ``depth.path`` points at."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.DPTConfig(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8,
        reassemble_factors=[4, 2, 1, 0.5],
    )
    transformers.DPTForDepthEstimation(config).save_pretrained(folder)
    processor = transformers.DPTImageProcessor(
        size={"height": 32, "width": 32}, keep_aspect_ratio=False, ensure_multiple_of=8
    )
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("experiment", "tiny_net", "depth"),
    [
        ("folder_ssr_stage1", TINY_DKENET, ["depth=none"]),
        ("folder_ssr_stage1", TINY_DKENET, ["depth.path=<dpt>"]),
        ("folder_ssr_stage2", TINY_RRDB, []),
    ],
    ids=["stage1-kernel-only", "stage1-hf-depth", "stage2"],
)
def test_folder_variant_composes_and_runs(
    tmp_path, experiment: str, tiny_net: list[str], depth: list[str]
):
    rng = np.random.default_rng(0)
    _photos(tmp_path / "photos" / "train", 4, rng)
    _photos(tmp_path / "photos" / "test", 2, rng)
    if depth == ["depth.path=<dpt>"]:
        depth = [f"depth.path={_tiny_depth_model(tmp_path / 'dpt')}"]
    cfg = _compose(
        [
            f"experiment={experiment}",
            *depth,
            f"data.root={tmp_path / 'photos'}",
            "data.crop_size=[32,32]",
            "data.eval_crop_size=[32,32]",
            "data.batch_size=2",
            "data.num_workers=0",
            f"degradation.blur.kernel_size={K}",
            *tiny_net,
            "debug=fdr",
        ],
        tmp_path / "out",
        tiny=False,
    )
    assert cfg.data._target_ == "svblur.data.OnTheFlyDefocusDataModule"
    assert cfg.degradation.blur._target_ == "svblur.degradation.GaussianFieldBlur"
    assert cfg.trainer.max_steps == 200000
    KeepModel.kept.clear()
    with open_dict(cfg):
        cfg.callbacks = {"keep": {"_target_": "tests.test_ssr_app.KeepModel"}}
    metrics = train(cfg)
    key = "test/kernels/l1" if experiment.endswith("1") else "test/sr/psnr_y"
    assert torch.isfinite(torch.tensor(metrics[key])), sorted(metrics)
    if depth and depth[0].startswith("depth.path="):
        # the photos' depth is the local model's estimate, as the model alone gives it
        from svblur.models import HFDepth

        task = KeepModel.kept[-1]
        assert type(task.depth_estimator) is HFDepth
        assert not any(p.requires_grad for p in task.depth_estimator.parameters())
        photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        reference = HFDepth(depth[0].split("=", 1)[1]).eval()
        torch.testing.assert_close(task.depth_estimator.eval()(photo), reference(photo))
    if experiment.endswith("1"):  # DIV2K-like photos have no depth to read
        with open_dict(cfg):
            cfg.model.depth_estimator = "svblur.models.GroundTruthDepth"
            cfg.model.depth_kwargs = {}
        with pytest.raises(InputError, match="ConstantDepth"):
            train(cfg)


@pytest.mark.parametrize("experiment", ["folder_ssr_stage1", "folder_ssr_latent"])
def test_folder_runs_without_a_depth_model_stop_with_one_line(tmp_path, experiment: str):
    cfg = _compose([f"experiment={experiment}", "data.root=x"], tmp_path, tiny=False)
    assert cfg.depth.name == "hf"  # a real monocular model is the photo configs' default
    with pytest.raises(InputError) as error:
        train(cfg)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{experiment} estimates depth")
    assert "depth.path=DIR" in message and "depth=none" in message


def _composed(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


def test_depth_group_feeds_every_folder_stage():
    """depth=hf / none / ground_truth decide stage 1's estimator and the SVKR's of the
    stage-3 configs alike; the command line's choice beats the experiment's default."""
    for experiment in ("folder_ssr_stage1", "folder_ssr_stage3", "folder_ssr_latent"):
        hf = _composed([f"experiment={experiment}", "data.root=x", "depth.path=/m/dpt"])
        none = _composed([f"experiment={experiment}", "data.root=x", "depth=none"])
        if experiment.endswith("stage1"):
            assert hf.model.depth_estimator == "svblur.models.HFDepth"
            assert dict(hf.model.depth_kwargs) == {"path": "/m/dpt", "output": "disparity"}
            assert none.model.depth_estimator == "svblur.models.ssr.ConstantDepth"
            assert dict(none.model.depth_kwargs) == {}
        else:
            node = hf.model.net.estimator.depth_estimator
            assert dict(node) == {
                "_target_": "svblur.models.HFDepth",
                "path": "/m/dpt",
                "output": "disparity",
            }
            built = instantiate(none.model.net.estimator.depth_estimator)
            assert isinstance(built, ConstantDepth)
    # the built-in data keeps its ground-truth depth and needs no depth group
    assert _composed(["experiment=synthetic_ssr_stage1"]).get("depth") is None


def test_folder_stage3_svkr_has_the_folder_stages_networks():
    """experiment=folder_ssr_stage3's frozen SVKR takes the weights folder_ssr_stage1 and
    folder_ssr_stage2 train (strict loading), with their depth source."""

    def net_of(experiment: str, key: str = "model.net") -> torch.nn.Module:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            cfg = compose(
                "train", overrides=[f"experiment={experiment}", "data.root=x", "depth=none"]
            )
        GlobalHydra.instance().clear()
        node = cfg
        for part in key.split("."):
            node = node[part]
        return instantiate(node)

    svkr = net_of("folder_ssr_stage3", "model.net.estimator")
    assert isinstance(svkr, SVKR) and isinstance(svkr.depth_estimator, ConstantDepth)
    svkr.kernel_estimator.load_state_dict(net_of("folder_ssr_stage1").state_dict())
    svkr.sr_net.load_state_dict(net_of("folder_ssr_stage2").state_dict())
