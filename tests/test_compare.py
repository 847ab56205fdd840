"""The compared models (CMOS ablation variants by config) and the ``svblur-compare`` runner."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

from svblur.data.synthetic import SyntheticDefocus
from svblur.degradation import imresize
from svblur.experiments import (
    METRICS,
    claim_lines,
    hydra_value,
    load_preset,
    run_comparison,
    summarize,
    write_tables,
)
from svblur.experiments import runner as compare
from svblur.experiments.claims import ARCSR_CLAIMS, BASELINE, CLAIMS, STAGE2_LABELS, paper_of
from svblur.experiments.overrides import compose_train_config
from svblur.metrics import psnr_y
from svblur.models import CMOS, MANet
from svblur.systems.sr import BlindSRTask


def _trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# Trainable parameters with 40 classes (NYUv2-BSR). The full model is the released
# architecture; the others were read off the instantiated networks and are pinned here
# so that a change of any variant is noticed.
VARIANT_PARAMETERS = {
    "cmos": 15_975_866,
    "cmos_gia_fc": 11_034_944,
    "cmos_gia_f": 6_923_178,
    "cmos_no_gia": 6_034_446,
    "cmos_no_aux": 15_975_087,
    "cmos_single_blur": 4_941_928,
    "cmos_single_seg": 4_953_238,
}


@pytest.mark.parametrize(("model", "expected"), sorted(VARIANT_PARAMETERS.items()))
def test_each_ablation_config_has_its_parameter_count(make_cfg, model, expected):
    cfg = make_cfg("train", [f"model={model}", "data.num_classes=40"])
    net = instantiate(cfg.model.net)
    assert isinstance(net, CMOS)
    assert _trainable(net) == expected


def _basic_blocks(c: int) -> int:
    # two ResNet basic blocks: 2 x (two 3x3 convs without bias + two BNs)
    return 2 * (2 * 9 * c * c + 2 * 2 * c)


def _hrnet_head(out: int, total: int = 18 + 36 + 72 + 144) -> int:
    return (total * total + total) + 2 * total + (total * out + out)


def test_variant_counts_cross_checked_from_the_layer_formulas():
    channels = (18, 36, 72, 144)
    backbone = _trainable(CMOS(40, tasks=("blur",), gia="none").backbone)
    heads = sum(_basic_blocks(c) for c in channels)
    # Without GIA, fusing scale s + 1 into s is a 1x1 projection (no bias) c_{s+1} -> c_s.
    projections = sum(channels[s + 1] * channels[s] for s in range(3))
    aux = {"blur": 18 + 1, "seg": 18 * 40 + 40}
    out = {"blur": _hrnet_head(1), "seg": _hrnet_head(40)}
    single_blur = backbone + heads + projections + aux["blur"] + out["blur"]
    assert single_blur == VARIANT_PARAMETERS["cmos_single_blur"]
    # no-GIA multi-task: one set of task parts per task; task-to-task GIAs are identities.
    no_gia = backbone + sum(heads + projections + aux[t] + out[t] for t in ("blur", "seg"))
    assert no_gia == VARIANT_PARAMETERS["cmos_no_gia"]
    # No auxiliary supervision removes exactly the two 1x1 auxiliary heads.
    assert VARIANT_PARAMETERS["cmos"] - VARIANT_PARAMETERS["cmos_no_aux"] == sum(aux.values())


def test_summary_statistics_and_orderings():
    mean, std = summarize([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and std == pytest.approx(1.0)
    assert math.isnan(summarize([5.0])[1])
    rows = [
        {"model": "cmos_full", "test/blur/psnr": 30.0, "test/blur/boundary_mae": 0.2},
        {"model": "cmos_full", "test/blur/psnr": 31.0, "test/blur/boundary_mae": 0.3},
        {"model": "manet", "test/blur/psnr": 29.0, "test/blur/boundary_mae": 0.1},
        {"model": "manet", "test/blur/psnr": 28.0, "test/blur/boundary_mae": 0.2},
    ]
    for row in rows:
        row.setdefault("test/seg/miou", math.nan)
        for key in ("test/blur/ssim", "test/blur/mae", "test/blur/boundary_psnr"):
            row.setdefault(key, math.nan)
        row["test/sr/psnr_y"] = math.nan
    lines = claim_lines(rows)
    psnr = next(line for line in lines if "blur PSNR" in line)
    boundary = next(line for line in lines if "boundary MAE" in line)
    assert ": holds;" in psnr  # 30.5 > 28.5, beyond the seed spread
    assert "does NOT hold" in boundary  # 0.25 > 0.15: lower is better

    # Blind SR: the models' stage-3 rows and the stage-2 reference (ground-truth maps).
    for row, value in zip(rows, (28.0, 28.2, 27.9, 27.9)):
        row["test/sr/psnr_y"] = value
    rows.append({"model": "stage2_gt_blur_seg", "test/sr/psnr_y": 28.5})
    sr_lines = [line for line in claim_lines(rows) if "blind-SR PSNR-Y" in line]
    assert len(sr_lines) == 2
    assert sr_lines[0].startswith("- cmos_full > manet") and ": holds;" in sr_lines[0]
    assert sr_lines[1].startswith("- stage2_gt_blur_seg > cmos_full") and ": holds;" in sr_lines[1]


def _net_state(path: Path, prefix: str = "net.") -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` of a Lightning checkpoint, prefix removed."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return bool(a) and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _spy_stage3_start(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record the stage-3 network right after its stage-1 and stage-2 weights are loaded."""
    loaded: list[dict] = []
    original = BlindSRTask.load_stage_checkpoints

    def spy(self: BlindSRTask) -> None:
        original(self)
        net = self.blind_sr
        loaded.append(
            {
                "estimator_ckpt": self.hparams.estimator_ckpt,
                "sr_ckpt": self.hparams.sr_ckpt,
                "estimator": {k: v.clone() for k, v in net.estimator.state_dict().items()},
                "sr": {k: v.clone() for k, v in net.sr.state_dict().items()},
                "seg_encoding": net.sr.seg_encoding,
            }
        )

    monkeypatch.setattr(BlindSRTask, "load_stage_checkpoints", spy)
    return loaded


def test_tiny_preset_writes_tables_with_command_hardware_and_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    loaded = _spy_stage3_start(monkeypatch)
    cfg = load_preset(["preset=tiny", f"out_dir={tmp_path}/res", f"log_dir={tmp_path}/logs"])
    assert list(cfg.models) == ["manet", "cmos_single_blur", "cmos_no_gia"]
    assert list(cfg.seeds) == [0]
    rows = run_comparison(cfg, "svblur-compare preset=tiny")
    # Stage 2 runs once per seed and kind, when the first model that needs it is done.
    assert [(r["model"], r["seed"]) for r in rows] == [
        ("manet", 0),
        ("stage2_gt_blur", 0),
        ("cmos_single_blur", 0),
        ("cmos_no_gia", 0),
        ("stage2_gt_blur_seg", 0),
    ]
    by_model = {r["model"]: r for r in rows}
    assert rows[0]["params"] == 1_128_161
    for row in rows:
        assert row["wall_s"] > 0 and row["steps"] == 2
        assert math.isfinite(row["test/sr/psnr_y"]) and row["test/sr/psnr_y"] > 5
        assert 0 < row["test/sr/ssim_y"] <= 1
    estimators = [by_model[m] for m in ("manet", "cmos_single_blur", "cmos_no_gia")]
    for row in estimators:
        assert math.isfinite(row["test/blur/psnr"]) and math.isfinite(row["test/blur/mae"])
        assert row["command"].startswith("svblur-train model=") and "seed=0" in row["command"]
        assert row["sr_steps"] == 2 and row["sr_wall_s"] > 0
        assert "model=blind_sr" in row["sr_command"] and "seed=0" in row["sr_command"]
    assert math.isnan(by_model["manet"]["test/seg/miou"])  # single-task blur models
    assert math.isnan(by_model["cmos_single_blur"]["test/seg/miou"])
    assert math.isfinite(by_model["cmos_no_gia"]["test/seg/miou"])

    # Blur-only models share the blur-only stage 2 (no semantic branch), the others the
    # one with semantics (class index, as released).
    blur_only = {"manet": True, "cmos_single_blur": True, "cmos_no_gia": False}
    seg_keys = {
        kind: any(k.startswith("prior.seg_embed") for k in _net_state(by_model[label]["weights"]))
        for kind, label in (("blur", "stage2_gt_blur"), ("seg", "stage2_gt_blur_seg"))
    }
    assert seg_keys == {"blur": False, "seg": True}
    assert by_model["stage2_gt_blur"]["params"] < by_model["stage2_gt_blur_seg"]["params"]
    assert len(loaded) == 3
    for row, start in zip(estimators, loaded):
        stage2 = by_model["stage2_gt_blur" if blur_only[row["model"]] else "stage2_gt_blur_seg"]
        assert row["sr_stage2"] == stage2["model"]
        assert start["seg_encoding"] == ("none" if blur_only[row["model"]] else "index")
        assert ("model.net.sr.seg_encoding=none" in row["sr_command"]) == blur_only[row["model"]]
        # Stage 3 starts from this run's stage-1 weights and the seed's stage-2 weights...
        assert start["estimator_ckpt"] == str(row["weights"])
        assert start["sr_ckpt"] == str(stage2["weights"])
        stage1_weights, stage2_weights = _net_state(row["weights"]), _net_state(stage2["weights"])
        assert _identical(start["estimator"], stage1_weights)
        assert _identical(start["sr"], stage2_weights)
        # ...keeps the estimator frozen (BatchNorm statistics included) and tunes RRDB-SFT.
        assert _identical(_net_state(row["sr_weights"], "net.estimator."), stage1_weights)
        assert not _identical(_net_state(row["sr_weights"], "net.sr."), stage2_weights)

    with open(tmp_path / "res" / "compare_tiny.csv") as f:
        table = list(csv.DictReader(f))
    # The trivial baselines follow the runs, measured once per seed.
    assert [r["model"] for r in table] == [r["model"] for r in rows] + ["constant", "bicubic"]
    baselines = [{k: _number(v) for k, v in r.items()} for r in table[-2:]]
    assert [(r["kind"], r["seed"]) for r in baselines] == [(BASELINE, 0), (BASELINE, 0)]
    _check_baselines(cfg, tmp_path, *baselines)
    for written, row in zip(table, rows):
        for key in ("test/blur/psnr", "test/sr/psnr_y", "test/sr/ssim_y"):
            assert float(written[key]) == pytest.approx(row[key], nan_ok=True)
    assert table[0]["sr_stage2"] == "stage2_gt_blur" and table[0]["sr_steps"] == "2"

    md = (tmp_path / "res" / "compare_tiny.md").read_text()
    assert "| manet | 1,128,161 |" in md
    assert "Mean ± sample std" in md
    assert "Command: `svblur-compare preset=tiny`" in md
    assert "Hardware:" in md and "cores" in md
    assert "Total wall time:" in md
    # The reference rows come after the models; the note says how SR was measured.
    assert md.index("| cmos_no_gia |") < md.index("| stage2_gt_blur |")
    assert md.index("| cmos_no_gia |") < md.index("| constant |") < md.index("| bicubic |")
    constant_cells = [c.strip() for c in md.split("| constant |")[1].split("\n")[0].split("|")]
    assert constant_cells[1 + [k for k, _, _ in METRICS].index("test/blur/psnr")] == (
        f"{baselines[0]['test/blur/psnr']:.2f}"
    )
    manet_cells = [c.strip() for c in md.split("| manet |")[1].split("\n")[0].split("|")]
    sr_column = 1 + [k for k, _, _ in METRICS].index("test/sr/psnr_y")
    assert manet_cells[sr_column] == f"{rows[0]['test/sr/psnr_y']:.2f}"
    assert "Blind SR (the paper's stages 2 and 3)" in md and "not measured" not in md
    assert "blur-only (seg_encoding=none) for manet, cmos_single_blur" in md
    assert "`overrides` + `model=blind_sr trainer.max_epochs=1`, 2 steps" in md
    assert "stage 3 from stage2_gt_blur (" in md

    # Two seeds: cells show mean ± std.
    rows2 = [dict(r, seed=1, **{"test/blur/psnr": r["test/blur/psnr"] + 1}) for r in rows]
    cfg.seeds = [0, 1]
    _, md_path = write_tables(rows + rows2, cfg, "x", 1.0, tmp_path / "two")
    assert " ± " in md_path.read_text().split("| manet |")[1].split("\n")[0]


def _number(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return text


def _check_baselines(cfg, tmp_path: Path, constant: dict, bicubic: dict) -> None:
    """The baseline rows against values computed here from the preset's test data."""
    job = compose_train_config([*cfg.models.manet, *cfg.overrides, "seed=0"], tmp_path / "ref")
    datamodule = instantiate(job.data, _convert_="all")
    datamodule.setup("fit")
    datamodule.setup("test")
    sigma = torch.cat([b["blur"].double().flatten() for b in datamodule.train_dataloader()])
    test = list(datamodule.test_dataloader())
    psnrs, sr_psnrs = [], []
    for batch in test:
        for target, lr, hr in zip(batch["blur"].double(), batch["lr"], batch["hr"]):
            # sigma / blur_norm clipped to [0, 1], the blur metrics' convention
            pred = (sigma.mean() / job.model.blur_norm).clamp(0, 1)
            mse = (pred - (target / job.model.blur_norm).clamp(0, 1)).pow(2).mean()
            psnrs.append(float(-10 * torch.log10(mse)))
            sr = imresize(lr[None].double(), job.data.scale).clamp(0, 1)
            sr_psnrs.append(float(psnr_y(sr, hr[None].double(), job.data.scale)))
    assert constant["test/blur/psnr"] == pytest.approx(sum(psnrs) / len(psnrs), abs=1e-4)
    assert bicubic["test/sr/psnr_y"] == pytest.approx(sum(sr_psnrs) / len(sr_psnrs), abs=1e-3)
    assert math.isnan(constant["test/sr/psnr_y"]) and math.isnan(bicubic["test/blur/psnr"])
    assert constant["params"] == bicubic["params"] == 0


def test_without_sr_the_blind_sr_columns_are_na_and_the_note_says_why(tmp_path: Path):
    cfg = load_preset(
        [
            "preset=tiny",
            "sr=null",
            "only=[manet]",
            f"out_dir={tmp_path}/res",
            f"log_dir={tmp_path}/logs",
        ]
    )
    rows = run_comparison(cfg, "svblur-compare preset=tiny sr=null")
    assert [r["model"] for r in rows] == ["manet"]
    assert math.isfinite(rows[0]["test/blur/psnr"])
    assert math.isnan(rows[0]["test/sr/psnr_y"]) and math.isnan(rows[0]["test/sr/ssim_y"])
    assert not list((tmp_path / "logs").rglob("*.ckpt"))  # no weights kept for later stages
    md = (tmp_path / "res" / "compare_tiny.md").read_text()
    cells = [c.strip() for c in md.split("| manet |")[1].split("\n")[0].split("|")]
    keys = [k for k, _, _ in METRICS]
    assert cells[1 + keys.index("test/sr/psnr_y")] == "n/a"
    assert cells[1 + keys.index("test/sr/ssim_y")] == "n/a"
    assert "stage2_gt" not in md.split("## Notes")[0]
    assert "Blind-SR PSNR-Y/SSIM-Y are not measured (n/a): this preset has `sr: null`" in md


@pytest.mark.parametrize(
    ("preset", "sr_size"), [("small", (32, 2, "lr")), ("full", (64, 10, "hr"))]
)
def test_presets_compose_every_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preset: str, sr_size: tuple
):
    """The small and full presets' stage-2/3 configs compose (training replaced by a stub)."""
    runs: list = []

    def fake_train(cfg, weights_path=None):
        runs.append(cfg)
        tasks = list(OmegaConf.select(cfg, "model.net.tasks", default=[]) or [])
        return {"test/blur/psnr": 20.0, **({"test/seg/miou": 0.5} if "seg" in tasks else {})}

    monkeypatch.setattr(compare, "train", fake_train)

    monkeypatch.setattr(compare, "measure_baselines", lambda *args: {})
    monkeypatch.setattr(compare, "_global_step", lambda weights: 7)
    cfg = load_preset(
        [f"preset={preset}", "seeds=[0]", f"out_dir={tmp_path}/res", f"log_dir={tmp_path}/logs"]
    )
    rows = run_comparison(cfg, "x")
    stage3 = [c for c in runs if c.model._target_ == "svblur.systems.sr.BlindSRTask"]
    stage2 = [c for c in runs if c.model._target_ == "svblur.systems.sr.NonBlindSRTask"]
    assert [c.model.net.seg_encoding for c in stage2] == ["none", "index"]
    assert [c.model.net.sr.seg_encoding for c in stage3] == ["none", "none", "index", "index"]
    estimators = [c.model.net.estimator._target_.rsplit(".", 1)[1] for c in stage3]
    assert estimators == ["MANet", "CMOS", "CMOS", "CMOS"]
    assert [list(c.model.net.estimator.tasks) for c in stage3[1:]] == [
        ["blur"],
        ["blur", "seg"],
        ["blur", "seg"],
    ]
    for net in [c.model.net for c in stage2] + [c.model.net.sr for c in stage3]:
        assert (net.num_features, net.num_blocks, net.fuse_resolution) == sr_size
    by_model = {r["model"]: r for r in rows}
    for c, model in zip(stage3, ("manet", "cmos_single_blur", "cmos_no_gia", "cmos_full")):
        stage2_label = by_model[model]["sr_stage2"]
        assert c.model.estimator_ckpt == str(by_model[model]["weights"])
        assert c.model.sr_ckpt == str(by_model[stage2_label]["weights"])
    assert len({c.trainer.max_epochs for c in stage3}) == 1  # the same SR budget for all


def test_runs_render_each_sample_once_and_as_a_data_set_alone_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The runs of a comparison share one render cache; the samples are unchanged."""
    rendered: list[tuple[str, int]] = []
    original = SyntheticDefocus.generator

    def spy(self: SyntheticDefocus, index: int):
        rendered.append((self.split, int(index)))
        return original(self, index)

    monkeypatch.setattr(SyntheticDefocus, "generator", spy)
    data_cfgs: list = []
    samples: list[list[dict[str, torch.Tensor]]] = []

    def fake_train(cfg, weights_path=None):
        data_cfgs.append(cfg.data)
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.setup("test")
        test_set = datamodule.datasets["test"]
        samples.append([test_set[i] for i in range(len(test_set))])
        return {"test/blur/psnr": 20.0}

    monkeypatch.setattr(compare, "train", fake_train)

    monkeypatch.setattr(compare, "measure_baselines", lambda *args: {})
    cfg = load_preset(
        [
            "preset=tiny",
            "sr=null",
            "only=[manet,cmos_single_blur]",
            f"out_dir={tmp_path}/res",
            f"log_dir={tmp_path}/logs",
        ]
    )
    run_comparison(cfg, "x")
    assert len(samples) == 2 and data_cfgs[0] == data_cfgs[1]
    # Every test sample once for both runs.
    assert sorted(rendered) == [("test", i) for i in range(4)]

    # Outside the comparison, with no cache at all: the same tensors, rendered again.
    alone = instantiate(data_cfgs[0], _convert_="all", cache=False)
    alone.setup("test")
    for run in samples:
        for index, item in enumerate(run):
            expected = alone.datasets["test"][index]
            assert all(torch.equal(item[k], expected[k]) for k in expected), index
    assert len(rendered) == 4 + 4 * 2


def test_a_model_without_semantics_must_be_listed_as_blur_only(tmp_path: Path):
    cfg = load_preset(
        [
            "preset=tiny",
            "only=[manet]",
            "sr.blur_only=[]",
            f"out_dir={tmp_path}/res",
            f"log_dir={tmp_path}/logs",
        ]
    )
    with pytest.raises(ValueError, match="add manet to sr.blur_only"):
        run_comparison(cfg, "x")


@pytest.mark.parametrize(
    "value",
    [
        {"_target_": "svblur.models.CMOS", "tasks": ["blur", "seg"], "window_size": [15, 20]},
        {"pretrained": False, "path": None, "lr": 1e-05, "gia": "FCS", "top": float("inf")},
        "/logs/compare small/manet/seed0/final.ckpt",
        "true",
        "1",
        "it's",
        'say "x"',
        -3,
    ],
)
def test_hydra_values_read_back_as_written(value):
    parsed = OverridesParser.create().parse_override(f"key={hydra_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


def test_hydra_values_refuse_what_hydra_cannot_read_back():
    with pytest.raises(ValueError, match="dict key 'inf'"):
        hydra_value({"inf": 1})
    with pytest.raises(ValueError, match="both quote characters"):
        hydra_value('it\'s "x"')


def test_preset_errors_name_the_fix():
    with pytest.raises(FileNotFoundError, match="known:.*small"):
        load_preset(["preset=nonexistent"])
    with pytest.raises(ValueError, match="key=value"):
        load_preset(["small"])
    with pytest.raises(ValueError, match="sr.blur_only=\\['nonexistent'\\]"):
        load_preset(["preset=small", "sr.blur_only=[manet,nonexistent]"])
    with pytest.raises(ValueError, match="sr.stage3 must list"):
        load_preset(["preset=small", "sr.stage3=[]"])
    cfg = load_preset(["preset=small", "seeds=[3]"])
    assert list(cfg.seeds) == [3] and list(cfg.models) == [
        "manet",
        "cmos_single_blur",
        "cmos_no_gia",
        "cmos_full",
    ]


def test_arcsr_orderings_with_their_seed_spread():
    """The ArcSR paper's orderings are checked only when a preset names them."""
    sr = "test/sr/psnr_y"
    values = {
        "arcsr_full": (24.0, 24.2),
        "arcsr_no_dmconv": (23.9, 24.0),  # within the spread of arcsr_full
        "arcsr_no_kgconv": (23.0, 23.1),
        "arcsr_baseline": (22.0, 22.1),
        "manet": (24.5, 24.6),  # beats ArcSR: the ordering does not hold
        STAGE2_LABELS["kernels"]: (25.0, 25.1),
    }
    rows = [{"model": m, sr: v} for m, pair in values.items() for v in pair]
    assert claim_lines(rows) == []  # the CMOS paper's orderings name none of these
    lines = claim_lines(rows, ARCSR_CLAIMS)
    assert len(lines) == len(ARCSR_CLAIMS) == 10
    verdicts = {line.split(" on ")[0][2:]: line.rsplit("): ", 1)[1] for line in lines}
    assert verdicts["arcsr_full > arcsr_no_dmconv"].startswith(
        "holds (difference within seed spread);"
    )
    assert verdicts["arcsr_full > arcsr_no_kgconv"].startswith("holds;")
    assert verdicts["arcsr_no_kgconv > arcsr_baseline"].startswith("holds;")
    assert verdicts["arcsr_full > manet"].startswith("does NOT hold;")
    for model in ("arcsr_full", "arcsr_no_dmconv", "arcsr_no_kgconv", "arcsr_baseline", "manet"):
        assert verdicts[f"stage2_gt_kernels > {model}"].startswith("holds;")
    assert paper_of(None).claims is CLAIMS and paper_of("arcsr").claims is ARCSR_CLAIMS
    assert "test/kernels/l1" not in paper_of("cmos").columns


def test_motion_tiny_preset_runs_direct_sr_models_next_to_kernel_blind_sr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """ArcSR rows are tested on SR directly; MANet's kernels feed stages 2 and 3."""
    loaded = _spy_stage3_start(monkeypatch)
    cfg = load_preset(["preset=motion_tiny", f"out_dir={tmp_path}/res", f"log_dir={tmp_path}/logs"])
    rows = run_comparison(cfg, "svblur-compare preset=motion_tiny")
    arcsr = ["arcsr_full", "arcsr_no_dmconv", "arcsr_no_kgconv", "arcsr_baseline"]
    assert [(r["model"], r["seed"], r["kind"]) for r in rows] == [
        *((m, 0, "direct_sr") for m in arcsr),
        ("manet", 0, "estimator"),
        ("stage2_gt_kernels", 0, "stage2"),
    ]
    by_model = {r["model"]: r for r in rows}
    for row in rows:
        assert row["wall_s"] > 0 and row["steps"] == 2 and row["params"] > 0
        assert math.isfinite(row["test/sr/psnr_y"]) and row["test/sr/psnr_y"] > 5
        assert 0 < row["test/sr/ssim_y"] <= 1
    # The direct blind-SR models: their own SR test, no stage 2 or 3.
    flags = {
        "arcsr_full": [],
        "arcsr_no_dmconv": ["model.net.dmconv=false"],
        "arcsr_no_kgconv": ["model.net.kgconv=false"],
        "arcsr_baseline": ["model.net.dmconv=false", "model.net.kgconv=false"],
    }
    for model in arcsr:
        row = by_model[model]
        assert row["command"].startswith("svblur-train model=arcsr ")
        assert [o for o in row["command"].split() if o.endswith("conv=false")] == flags[model]
        assert not any(key.startswith("sr_") for key in row)
        assert not (tmp_path / "logs" / "compare_motion_tiny" / model / "seed0" / "stage3").exists()
    # MANet: kernels estimated in stage 1, blind-SR numbers from its stage 3.
    manet, stage2 = by_model["manet"], by_model["stage2_gt_kernels"]
    assert math.isfinite(manet["test/kernels/l1"]) and 0 <= manet["test/kernels/l1"] <= 2
    assert manet["sr_stage2"] == "stage2_gt_kernels" and manet["sr_steps"] == 2
    assert "model=blind_sr" in manet["sr_command"]
    assert "++model.net.sr.kernel_channels=25" in manet["sr_command"]  # 5x5 data kernels
    assert "++model.net.kernel_channels=25" in stage2["command"]
    assert len(loaded) == 1
    assert loaded[0]["estimator_ckpt"] == str(manet["weights"])
    assert loaded[0]["sr_ckpt"] == str(stage2["weights"])
    assert _identical(loaded[0]["estimator"], _net_state(manet["weights"]))
    assert _identical(loaded[0]["sr"], _net_state(stage2["weights"]))
    stage3 = torch.load(manet["sr_weights"], map_location="cpu", weights_only=True)
    assert stage3["state_dict"]["net.sr.prior.code.weight"].shape[1] == 25
    assert _identical(
        _net_state(manet["sr_weights"], "net.estimator."), _net_state(manet["weights"])
    )

    with open(tmp_path / "res" / "compare_motion_tiny.csv") as f:
        table = list(csv.DictReader(f))
    runs, baselines = table[: len(rows)], table[len(rows) :]
    assert [(r["model"], r["kind"]) for r in runs] == [(r["model"], r["kind"]) for r in rows]
    # the seed's trivial baselines follow: the mean kernel and bicubic
    assert [(r["model"], r["kind"]) for r in baselines] == [
        ("constant", BASELINE),
        ("bicubic", BASELINE),
    ]
    assert float(baselines[0]["test/kernels/l1"]) > 0
    assert "test/kernels/l1" in table[0] and "test/blur/psnr" not in table[0]
    md = (tmp_path / "res" / "compare_motion_tiny.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    assert header == (
        "| model | params | blind-SR PSNR-Y (dB) | blind-SR SSIM-Y | kernel L1 | wall (s/run) "
        "| stage-3 wall (s/run) |"
    )
    for model in arcsr:
        assert md.split(f"| {model} |")[1].split("\n")[0].rstrip().endswith("| n/a |")
    assert md.index("| manet |") < md.index("| stage2_gt_kernels |")
    claims = md.split("## The ArcSR paper's orderings on this data\n\n")[1].split("\n\n")[0]
    claim_rows = claims.splitlines()
    assert len(claim_rows) == 10
    assert claim_rows[0].startswith("- arcsr_full > arcsr_no_dmconv on blind-SR PSNR-Y (dB)")
    assert claim_rows[4].startswith("- arcsr_full > manet on blind-SR PSNR-Y (dB)")
    assert claim_rows[-1].startswith("- stage2_gt_kernels > manet on blind-SR PSNR-Y (dB)")
    assert all(": holds;" in c or ": does NOT hold;" in c for c in claim_rows)
    assert (
        "conditioned on the kernel field" in md
        and "for the kernel estimators manet (stage2_gt_kernels" in md
    )
    assert "Direct blind-SR models (arcsr_full, arcsr_no_dmconv" in md


def test_preset_paper_and_model_kinds_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(
        ValueError, match=r"paper='nope' is unknown; known: \['arcsr', 'cmos', 'pbasr', 'ssr'\]"
    ):
        load_preset(["preset=motion_tiny", "paper=nope"])
    assert load_preset(["preset=tiny"]).get("paper") is None  # CMOS by default

    def no_training(cfg, weights_path=None):
        raise AssertionError("the preset's error must come before any training")

    monkeypatch.setattr(compare, "train", no_training)

    monkeypatch.setattr(compare, "measure_baselines", lambda *args: {})
    cfg = load_preset(
        [
            "preset=motion_tiny",
            "only=[arcsr_full]",
            "sr.blur_only=[arcsr_full]",
            f"out_dir={tmp_path}/res",
            f"log_dir={tmp_path}/logs",
        ]
    )
    with pytest.raises(ValueError, match="direct blind-SR model .* remove it from sr.blur_only"):
        run_comparison(cfg, "x")


def test_motion_preset_composes_every_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The motion preset's configs (training replaced by a stub): MANet's kernel head feeds
    an RRDB-SFT on 121 taps; ArcSR has no stages 2 or 3; one schedule for all."""
    runs: list = []

    def fake_train(cfg, weights_path=None):
        runs.append(cfg)
        if cfg.model._target_.endswith("BlurSemanticsTask"):
            return {"test/kernels/l1": 0.5}
        return {"test/sr/psnr_y": 20.0}

    monkeypatch.setattr(compare, "train", fake_train)

    monkeypatch.setattr(compare, "measure_baselines", lambda *args: {})
    monkeypatch.setattr(compare, "_global_step", lambda weights: 7)
    monkeypatch.setattr(compare, "_trainable_parameters", lambda cfg: 1)
    cfg = load_preset(
        ["preset=motion", "seeds=[0]", f"out_dir={tmp_path}/res", f"log_dir={tmp_path}/logs"]
    )
    rows = run_comparison(cfg, "x")
    systems = [c.model._target_.rsplit(".", 1)[1] for c in runs]
    assert systems == [*["KernelBlindSRTask"] * 4, "BlurSemanticsTask", "NonBlindSRTask"] + [
        "BlindSRTask"
    ]
    assert [r["kind"] for r in rows] == [*["direct_sr"] * 4, "estimator", "stage2"]
    assert [(c.model.net.dmconv, c.model.net.kgconv) for c in runs[:4]] == [
        (True, True),
        (False, True),
        (True, False),
        (False, False),
    ]
    assert {c.degradation.blur.kernel_size for c in runs} == {11}
    assert {c.model.scheduler._target_ for c in runs} == {"svblur.systems.WarmupCosineLR"}
    manet, stage2, stage3 = runs[4], runs[5], runs[6]
    assert instantiate(manet.model.net).kernel_size == 11
    assert stage2.model.net.kernel_channels == 121 == stage3.model.net.sr.kernel_channels
    estimator = instantiate(stage3.model.net.estimator)
    assert isinstance(estimator, MANet) and estimator.output == "kernels"
    assert stage2.trainer.max_epochs == runs[0].trainer.max_epochs  # the upper bound's budget
