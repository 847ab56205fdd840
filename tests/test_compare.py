"""The compared models (CMOS ablation variants by config) and the ``svblur-compare`` runner."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from hydra.utils import instantiate

from svblur.cli.compare import (
    claim_lines,
    load_preset,
    run_comparison,
    summarize,
    write_tables,
)
from svblur.models import CMOS


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


def test_tiny_preset_writes_tables_with_command_hardware_and_times(tmp_path: Path):
    cfg = load_preset(["preset=tiny", f"out_dir={tmp_path}/res", f"log_dir={tmp_path}/logs"])
    assert list(cfg.models) == ["manet", "cmos_single_blur"] and list(cfg.seeds) == [0]
    rows = run_comparison(cfg, "svblur-compare preset=tiny")
    assert [(r["model"], r["seed"]) for r in rows] == [("manet", 0), ("cmos_single_blur", 0)]
    assert rows[0]["params"] == 1_128_161
    for row in rows:
        assert row["wall_s"] > 0
        assert math.isfinite(row["test/blur/psnr"]) and math.isfinite(row["test/blur/mae"])
        assert math.isnan(row["test/seg/miou"])  # single-task blur models
        assert row["command"].startswith("svblur-train model=") and "seed=0" in row["command"]

    with open(tmp_path / "res" / "compare_tiny.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["manet", "cmos_single_blur"]
    assert float(table[0]["test/blur/psnr"]) == pytest.approx(rows[0]["test/blur/psnr"])

    md = (tmp_path / "res" / "compare_tiny.md").read_text()
    assert "| manet | 1,128,161 |" in md
    assert "Mean ± sample std" in md
    assert "Command: `svblur-compare preset=tiny`" in md
    assert "Hardware:" in md and "cores" in md
    assert "Total wall time:" in md
    assert "Blind-SR PSNR-Y" in md and "not measured" in md

    # Two seeds: cells show mean ± std.
    rows2 = [dict(r, seed=1, **{"test/blur/psnr": r["test/blur/psnr"] + 1}) for r in rows]
    cfg.seeds = [0, 1]
    _, md_path = write_tables(rows + rows2, cfg, "x", 1.0, tmp_path / "two")
    assert " ± " in md_path.read_text().split("| manet |")[1].split("\n")[0]


def test_preset_errors_name_the_fix():
    with pytest.raises(FileNotFoundError, match="known:.*small"):
        load_preset(["preset=nonexistent"])
    with pytest.raises(ValueError, match="key=value"):
        load_preset(["small"])
    cfg = load_preset(["preset=small", "seeds=[3]"])
    assert list(cfg.seeds) == [3] and list(cfg.models) == [
        "manet",
        "cmos_single_blur",
        "cmos_no_gia",
        "cmos_full",
    ]
