"""``svblur-compare preset=ssr_tiny``: SSR's stages once per seed, the SVKR evaluation
split into rows (T = 1..3, without depth), the diffusion SR with AMF on that seed's SVKR,
MANet's blind SR, and the SSR paper's orderings decided by the measured numbers."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from svblur.experiments import claim_lines, load_preset, run_comparison
from svblur.experiments import runner as compare
from svblur.experiments.claims import METRICS, SSR_CLAIMS, paper_of

SVKR_ROWS = ("svkr_t1", "svkr_t2", "svkr_t3", "svkr_no_depth")
STAGES = ("ssr_stage1", "ssr_stage2_gt_kernels", "ssr_stage1_no_depth")
COLUMNS = ("test/kernels/l1", "test/sr/psnr_y", "test/sr/ssim_y")


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _check_verdict(line: str) -> None:
    """The verdict of a claim line agrees with its two numbers (``>``: higher is better,
    ``<``: lower is better)."""
    match = re.match(r"- (\S+) ([<>]) (\S+) on .*: (holds|does NOT hold).*; (\S+) vs (\S+)$", line)
    assert match, line
    symbol, verdict = match.group(2), match.group(4)
    good, bad = float(match.group(5)), float(match.group(6))
    if good == bad:  # equal at the printed precision: the unrounded values decided
        return
    better = good > bad if symbol == ">" else good < bad
    assert (verdict == "holds") == better, line


def test_ssr_tiny_preset_rows_weights_table_and_claims(tmp_path: Path):
    cfg = load_preset(["preset=ssr_tiny", f"out_dir={tmp_path}/res", f"log_dir={tmp_path}/logs"])
    rows = run_comparison(cfg, "svblur-compare preset=ssr_tiny")
    assert [(r["model"], r["kind"]) for r in rows] == [
        *((s, "ssr_stage") for s in STAGES),
        *((s, "svkr") for s in SVKR_ROWS),
        ("diffusion_amf", "direct_sr"),
        ("manet", "estimator"),
        ("stage2_gt_kernels", "stage2"),
    ]
    assert {r["seed"] for r in rows} == {0}
    by_model = {r["model"]: r for r in rows}

    # Every row of the table is measured: kernel L1 in [0, 2], PSNR and SSIM in range.
    for label in (*SVKR_ROWS, "diffusion_amf", "manet"):
        row = by_model[label]
        assert 0.0 <= row["test/kernels/l1"] <= 2.0, label
        assert 0.0 < row["test/sr/psnr_y"] < 60.0, label
        assert -1.0 < row["test/sr/ssim_y"] <= 1.0, label
        assert row["params"] > 0, label
    assert 0.0 <= by_model["ssr_stage1"]["test/kernels/l1"] <= 2.0
    assert 0.0 < by_model["ssr_stage2_gt_kernels"]["test/sr/psnr_y"] < 60.0
    # The T rows come from one evaluation: depth estimated from each SR image moves the
    # kernels (with ground-truth depth every T would be the same).
    assert len({by_model[f"svkr_t{t}"]["command"] for t in (1, 2, 3)}) == 1
    assert by_model["svkr_t1"]["test/kernels/l1"] != by_model["svkr_t2"]["test/kernels/l1"]
    # without depth: the no-depth DKENet (no depth network) and the same RRDB-SFT
    assert by_model["svkr_no_depth"]["params"] < by_model["svkr_t3"]["params"]

    # The SVKR evaluation and the diffusion stage load the seed's stage checkpoints ...
    stage1, stage2 = by_model["ssr_stage1"]["weights"], by_model["ssr_stage2_gt_kernels"]["weights"]
    no_depth = by_model["ssr_stage1_no_depth"]["weights"]
    for path in (stage1, stage2, no_depth):
        assert str(path) in by_model["svkr_t1"]["command"]
    assert str(stage1) in by_model["diffusion_amf"]["command"]
    assert str(stage2) in by_model["diffusion_amf"]["command"]
    # ... and the diffusion model's frozen SVKR, after training, holds exactly their weights.
    diffusion, first, second = (
        _state(by_model["diffusion_amf"]["weights"]),
        _state(stage1),
        _state(stage2),
    )
    pairs = {
        "net.estimator.kernel_estimator.": (first, "net."),
        "net.estimator.depth_estimator.": (first, "depth_estimator."),
        "net.estimator.sr_net.": (second, "net."),
    }
    for prefix, (source, source_prefix) in pairs.items():
        part = {k[len(prefix) :]: v for k, v in diffusion.items() if k.startswith(prefix)}
        expected = {
            k[len(source_prefix) :]: v for k, v in source.items() if k.startswith(source_prefix)
        }
        assert part and part.keys() == expected.keys(), prefix
        for key, value in expected.items():
            assert torch.equal(part[key], value), prefix + key
    for key in ("pca_mean", "pca_components", "pca_explained"):
        assert torch.equal(diffusion[f"net.estimator.{key}"], second[key])

    # The tables: the CSV per run, the Markdown summary with the paper's orderings.
    with open(tmp_path / "res" / "compare_ssr_tiny.csv") as f:
        table = list(csv.DictReader(f))
    # the runs, then each seed's trivial baselines: the mean kernel and bicubic
    assert [r["model"] for r in table] == [r["model"] for r in rows] + ["constant", "bicubic"]
    assert float(table[-2]["test/kernels/l1"]) > 0
    md = (tmp_path / "res" / "compare_ssr_tiny.md").read_text()
    labels = {k: lbl for k, lbl, _ in METRICS}
    header = "| model | params | " + " | ".join(labels[k] for k in COLUMNS)
    assert header in md
    assert paper_of("ssr").columns == COLUMNS
    for label in (*SVKR_ROWS, "diffusion_amf", "manet", *STAGES, "stage2_gt_kernels"):
        assert f"\n| {label} | " in md, label
    row_t3 = next(line for line in md.splitlines() if line.startswith("| svkr_t3 |"))
    assert f"{by_model['svkr_t3']['test/sr/psnr_y']:.2f}" in row_t3
    assert "## The SSR paper's orderings on this data" in md
    claims = claim_lines(rows, SSR_CLAIMS)
    assert len(claims) == len(SSR_CLAIMS)  # every pair is in the preset
    for line in claims:
        assert line in md
        _check_verdict(line)
    assert "the T rows need depth estimated from the image" in md


def _row(model: str, seed: int, **values: float) -> dict:
    keys = {"kl1": "test/kernels/l1", "psnr": "test/sr/psnr_y"}
    return {"model": model, "seed": seed, **{keys[k]: v for k, v in values.items()}}


def test_ssr_claims_are_decided_by_the_rows():
    rows = []
    for seed, jitter in enumerate((0.0, 0.01, -0.01)):
        rows += [
            _row("svkr_t1", seed, kl1=0.50 + jitter, psnr=25.0 + jitter),
            _row("svkr_t3", seed, kl1=0.40 + jitter, psnr=25.0 + jitter),  # PSNR tie
            _row("svkr_no_depth", seed, kl1=0.41 - jitter, psnr=24.0),
            _row("diffusion_amf", seed, kl1=0.90, psnr=23.0 + jitter),
            _row("manet", seed, kl1=0.95 + 20 * jitter, psnr=24.5),
        ]
    lines = claim_lines(rows, SSR_CLAIMS)
    assert len(lines) == len(SSR_CLAIMS)
    verdicts = {}
    for line in lines:
        match = re.match(
            r"(- \S+ [<>] \S+ on (?:kernel L1|blind-SR PSNR-Y \(dB\))) \(.*: (holds.*|does NOT hold.*); \S+ vs",
            line,
        )
        assert match, line
        verdicts[match.group(1)] = match.group(2)
    assert verdicts == {
        # 0.40 vs 0.41, seed spreads 0.01 each: better, but within the combined spread
        "- svkr_t3 < svkr_no_depth on kernel L1": "holds (difference within seed spread)",
        "- svkr_t3 > svkr_no_depth on blind-SR PSNR-Y (dB)": "holds",
        "- svkr_t3 < svkr_t1 on kernel L1": "holds",
        # equal is not better
        "- svkr_t3 > svkr_t1 on blind-SR PSNR-Y (dB)": "does NOT hold (difference within seed "
        "spread)",
        "- diffusion_amf > svkr_t3 on blind-SR PSNR-Y (dB)": "does NOT hold",
        "- diffusion_amf < manet on kernel L1": "holds (difference within seed spread)",
        "- diffusion_amf > manet on blind-SR PSNR-Y (dB)": "does NOT hold",
        "- svkr_t3 > manet on blind-SR PSNR-Y (dB)": "holds",
    }
    for line in lines:
        _check_verdict(line)
    # a missing model leaves its orderings out; NaN (not measured) too
    partial = [r for r in rows if r["model"] != "manet"]
    partial.append({"model": "manet", "seed": 0, "test/kernels/l1": math.nan})
    kept = claim_lines(partial, SSR_CLAIMS)
    assert len(kept) == 5 and not any("manet" in line for line in kept)


def test_ssr_small_preset_composes_every_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The ssr_small preset's configs (training replaced by a stub): SSR's stages once per
    seed on 21x21 kernels, the SVKR and the diffusion stage given their checkpoints and
    networks, MANet's blind SR, the same data for all, and both SR networks as many steps."""
    runs: list = []
    svkr_keys = {
        f"test/{prefix}t{t}/{name}": 0.5
        for prefix in ("", "no_depth/")
        for t in (1, 2, 3)
        for name in ("kernels/l1", "sr/psnr_y", "sr/ssim_y")
    }

    def fake_train(cfg, weights_path=None):
        runs.append(cfg)
        if cfg.model._target_.endswith("BlurSemanticsTask"):
            return {"test/kernels/l1": 0.5}  # MANet: a kernel estimator
        return svkr_keys if cfg.model._target_.endswith("SVKRTask") else {}

    monkeypatch.setattr(compare, "train", fake_train)

    monkeypatch.setattr(compare, "measure_baselines", lambda *args: {})
    monkeypatch.setattr(compare, "_global_step", lambda weights: 7)
    monkeypatch.setattr(compare, "_trainable_parameters", lambda cfg: 1)
    cfg = load_preset(
        ["preset=ssr_small", "seeds=[0]", f"out_dir={tmp_path}/res", f"log_dir={tmp_path}/logs"]
    )
    rows = run_comparison(cfg, "x")
    systems = [c.model._target_.rsplit(".", 1)[1] for c in runs]
    assert systems == [
        "KernelEstimationTask",
        "KernelCodeSRTask",
        "KernelEstimationTask",
        "SVKRTask",
        "DiffusionSRTask",
        "BlurSemanticsTask",
        "NonBlindSRTask",
        "BlindSRTask",
    ]
    assert [r["model"] for r in rows][3:7] == list(SVKR_ROWS)
    stage1, stage2, no_depth, svkr, diffusion, manet, mstage2, mstage3 = runs
    assert stage1.model.depth_estimator == "svblur.models.SMPDepthNet"
    assert no_depth.model.depth_estimator == "svblur.models.ssr.ConstantDepth"
    assert {c.degradation.blur.kernel_size for c in runs} == {21}
    assert {tuple(c.data.hr_size) for c in runs} == {(64, 80)}
    assert {c.data.test_size for c in runs} == {32}
    logs = tmp_path / "logs" / "compare_ssr_small"
    assert svkr.model.stage1_ckpt == str(logs / "ssr_stage1" / "seed0" / "final.ckpt")
    assert svkr.model.stage2_ckpt == str(logs / "ssr_stage2_gt_kernels" / "seed0" / "final.ckpt")
    assert svkr.model.no_depth_stage1_ckpt == str(
        logs / "ssr_stage1_no_depth" / "seed0" / "final.ckpt"
    )
    assert diffusion.model.condition == "svkr"
    assert diffusion.model.kernel_estimator_ckpt == svkr.model.stage1_ckpt
    assert diffusion.model.sr_ckpt == svkr.model.stage2_ckpt
    estimator = OmegaConf.to_container(diffusion.model.net.estimator, resolve=True)
    assert estimator["kernel_estimator"] == OmegaConf.to_container(stage1.model.net, resolve=True)
    assert estimator["sr_net"] == OmegaConf.to_container(stage2.model.net, resolve=True)
    assert estimator["depth_estimator"]["_target_"] == "svblur.models.SMPDepthNet"
    assert estimator["pca"] == stage2.model.net.kernel_channels == 15
    assert diffusion.model.net.kernel_size == 21
    assert mstage2.model.net.kernel_channels == 21 * 21 == mstage3.model.net.sr.kernel_channels
    # SSR's RRDB-SFT gets MANet's stage-2 + stage-3 epochs, both networks the same size
    assert stage2.trainer.max_epochs == mstage2.trainer.max_epochs + mstage3.trainer.max_epochs
    sizes = ("num_features", "num_blocks", "growth_channels", "prior_channels")
    assert all(stage2.model.net[k] == mstage2.model.net[k] for k in sizes)
    assert stage1.trainer.max_epochs == no_depth.trainer.max_epochs == manet.trainer.max_epochs
