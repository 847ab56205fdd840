"""The tables of a comparison: ``compare_<preset>.csv`` (per run) and ``.md`` (summary).

The Markdown summary gives mean +- std per model, the paper's orderings checked against
them (:func:`svblur.experiments.claims.claim_lines`), how blind SR was measured, the
exact commands, the hardware and the wall times.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from svblur.experiments.claims import (
    BASELINE,
    DIRECT_SR,
    METRICS,
    SSR_STAGE,
    STAGE2,
    STAGE2_LABELS,
    claim_lines,
    paper_of,
    summarize,
)

__all__ = ["cpu_name", "hardware", "sr_note", "write_tables"]


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    """One line describing the machine: CPU model and cores, GPU if any, torch version."""
    cpu = cpu_name()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [f"{cpu}, {cores} cores available, {torch.get_num_threads()} torch threads"]
    if torch.cuda.is_available():
        parts.append(f"GPU: {torch.cuda.get_device_name(0)}")
    else:
        parts.append("no GPU")
    parts.append(f"torch {torch.__version__}, {platform.system()} {platform.release()}")
    return "; ".join(parts)


def _span(values: list[Any]) -> str:
    """``"96"``, or ``"96-128"`` when the runs differ; ``"?"`` when none is known."""
    known = sorted({int(v) for v in values if isinstance(v, int)})
    if not known:
        return "?"
    return str(known[0]) if len(known) == 1 else f"{known[0]}-{known[-1]}"


def _direct_models(rows: list[dict[str, Any]]) -> list[str]:
    """The labels of the direct blind-SR models among ``rows``, in order."""
    return list(dict.fromkeys(r["model"] for r in rows if r.get("kind") == DIRECT_SR))


def sr_note(cfg: DictConfig, rows: list[dict[str, Any]]) -> str:
    """How the blind-SR columns were measured (stages 2 and 3, direct SR), or why n/a.

    Args:
        cfg: The preset.
        rows: The runs so far (the stage-2 rows give the SR networks' sizes, the models'
            rows which stage-2 network each one's stage 3 starts from).
    """
    direct = _direct_models(rows)
    direct_note = (
        f" Direct blind-SR models ({', '.join(direct)}): one network from the LR image to "
        "the SR image, trained with the stage-1 overrides (and their own, listed under Runs) "
        "and tested on SR once per seed; "
        "they have no stage 2 or 3."
        if direct
        else ""
    )
    sr = cfg.get("sr")
    if not sr and direct and all(r.get("kind") == DIRECT_SR for r in rows):
        return direct_note.strip()  # no estimator: nothing to measure by stages 2 and 3
    if not sr:
        if direct:
            return (
                "Blind SR of the estimators is not measured (n/a): this preset has `sr: "
                "null`, so neither stage 2 nor stage 3 is trained." + direct_note
            )
        return (
            "Blind-SR PSNR-Y/SSIM-Y are not measured (n/a): this preset has `sr: null`, so "
            "neither stage 2 (RRDB-SFT on ground-truth maps) nor stage 3 (RRDB-SFT "
            "fine-tuned on each model's frozen estimates) is trained; the `sr` section of "
            "conf/compare/small.yaml shows how to enable them."
        )
    net = OmegaConf.to_container(sr.net, resolve=True) if sr.get("net") else {}
    assert isinstance(net, dict)
    size = ", ".join(f"{k}={v}" for k, v in net.items())
    size = (
        f"`{size}`, other settings as conf/model/rrdb_sft.yaml"
        if size
        else "the released size (conf/model/rrdb_sft.yaml)"
    )
    kinds = {
        "seg": (
            f"with the semantic map (seg_encoding={net.get('seg_encoding', 'index')}) for {{}}"
        ),
        "blur": "blur-only (seg_encoding=none) for {}, which predict no semantic map",
        "kernels": (
            "conditioned on the kernel field (kernel_channels = k*k of the data's "
            "degradation.blur.kernel_size, no semantic map) for the kernel estimators {}"
        ),
    }
    parts = []
    for kind, label in STAGE2_LABELS.items():
        runs = [r for r in rows if r["model"] == label]
        if runs:
            users = dict.fromkeys(r["model"] for r in rows if r.get("sr_stage2") == label)
            parts.append(
                kinds[kind].format(", ".join(users) or "(none yet)")
                + f" ({label}, {runs[0]['params']:,} parameters)"
            )
    stage2_steps = _span([r.get("steps") for r in rows if r.get("kind") == STAGE2])
    stage3_steps = _span([r.get("sr_steps") for r in rows])
    trained = {r["model"] for r in rows if r.get("kind") == STAGE2}
    kernels, maps = STAGE2_LABELS["kernels"] in trained, bool(trained - {STAGE2_LABELS["kernels"]})
    ground_truth = {(True, False): "kernel fields", (True, True): "maps or kernel fields"}.get(
        (kernels, maps), "blur and semantic maps"
    )
    return (
        f"Blind SR (the paper's stages 2 and 3), RRDB-SFT of {size}. Stage 2, once per "
        f"seed and shared by that seed's models: RRDB-SFT trained on the ground-truth "
        f"{ground_truth} (`overrides` + `{' '.join(sr.stage2)}`, {stage2_steps} steps), "
        + ("; ".join(parts) or "(none trained yet)")
        + ". The stage2_gt_* rows are these networks tested on ground-truth inputs (the "
        "paper's upper bound; they get none of the stage-3 steps). Stage 3, per model and "
        "seed, the same budget for every model: the model's final stage-1 weights, frozen, "
        "estimate the maps (or kernels) from the LR image; RRDB-SFT starts from the "
        "matching stage-2 weights of that seed, is fine-tuned on those estimates (`overrides` + "
        f"`{' '.join(sr.stage3)}`, {stage3_steps} steps), then tested. Models that share a "
        "stage-2 network differ only in their estimates; between the groups the SR "
        "network's input differs too (e.g. blur only vs blur + semantics), as in the paper."
        + direct_note
        + " PSNR-Y/SSIM-Y: Y channel, a border of `scale` pixels cropped, SR rounded to 8 "
        "bits (svblur.metrics.sr)."
    )


def _fmt(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _digits(key: str) -> int:
    if key.endswith("/params"):
        return 0
    return 2 if "psnr" in key or key.endswith("/ms") else 4


def _anchor_note(cfg: DictConfig) -> str | None:
    """How the models of an ``anchor`` / ``test_data`` preset start and are tested."""
    notes = []
    if cfg.get("anchor"):
        notes.append(
            f"Every model but `{cfg.anchor}` starts from the generator that the run of "
            f"`{cfg.anchor}` of the same seed exported (`model.anchor_ckpt`, checked by "
            "the tests); its own steps are its fine-tuning budget."
        )
    if cfg.get("test_data") is not None:
        notes.append(
            "Every model is trained on its own data (its overrides) and its final weights "
            f"are tested on one test set, the test split of `{' '.join(cfg.test_data)}`."
        )
    return " ".join(notes) or None


def _ssr_note(cfg: DictConfig) -> str | None:
    """How SSR's rows were made (a preset with an ``ssr`` section)."""
    ssr = cfg.get("ssr")
    if not ssr:
        return None
    no_depth = (
        f"DKENet trained without depth (`{' '.join(ssr.no_depth_stage1)}`, "
        "ssr_stage1_no_depth), the same RRDB-SFT"
        if ssr.get("no_depth_stage1")
        else "the stage-1 DKENet given a constant depth, the same RRDB-SFT"
    )
    return (
        "SSR, once per seed: stage 1 (ssr_stage1: DKENet and its depth network trained "
        f"together, `{' '.join(ssr.stage1)}`; its row is DKENet with depth from the HR "
        "image) and stage 2 (ssr_stage2_gt_kernels: RRDB-SFT on the PCA code of the "
        f"ground-truth kernels, `{' '.join(ssr.stage2)}`; its row is that network on "
        "ground-truth kernels, the upper bound of SVKR's SR). The svkr_* rows are one "
        "evaluation of the SVKR built from these two checkpoints (no training): T = 1, 2, 3 "
        "refinement steps with depth estimated by the stage-1 depth network from the SR "
        "image of the step before (the first from the bicubic image), and without depth: "
        f"{no_depth}. With the data's ground-truth depth every T would give the same "
        "kernels, so the T rows need depth estimated from the image. diffusion_amf: SSR's "
        "stage 3 (DiffusionSR with AMF) conditioned on the frozen SVKR (T = 3) loaded from "
        "the same seed's stage-1 and stage-2 checkpoints (the tests check the weights), "
        "trained with its own overrides and tested with its sampling settings; its params "
        "are the trainable ones (the frozen SVKR not counted; the svkr rows give its "
        "size). manet: MANet's kernel head with blind SR by stages 2 "
        "and 3 (RRDB-SFT on the kernel field, see above)."
    )


def write_tables(
    rows: list[dict[str, Any]], cfg: DictConfig, command: str, total_s: float, out_dir: Path
) -> tuple[Path, Path]:
    """Write ``compare_<preset>.csv`` (per run) and ``compare_<preset>.md`` (summary).

    The columns are those of the preset's ``paper`` (:data:`~svblur.experiments.claims.PAPERS`;
    CMOS unless it says otherwise), its orderings are checked. Rows of the stage-1
    estimators carry their stage-3 (blind-SR) results and ``sr_*`` columns, rows of direct
    blind-SR models their own SR test; the ``stage2_gt_*`` rows are the stage-2 networks,
    listed after the models.

    Args:
        rows: The runs, as returned by :func:`svblur.experiments.run_comparison`.
        cfg: The preset (from :func:`svblur.experiments.load_preset`).
        command: The command line recorded in the summary.
        total_s: Wall time of the comparison so far, in seconds.
        out_dir: Folder of the two tables (created if missing).

    Returns:
        The paths of the CSV and the Markdown tables.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"compare_{cfg.preset}"
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    paper = paper_of(cfg.get("paper"))
    labels_of = {k: lbl for k, lbl, _ in METRICS}
    columns = list(paper.columns)
    fields = [
        "model",
        "seed",
        "kind",
        "params",
        "wall_s",
        *columns,
        "command",
        "steps",
        "sr_stage2",
        "sr_steps",
        "sr_wall_s",
        "sr_command",
        *(["anchor_ckpt", "test_wall_s"] if cfg.get("anchor") or cfg.get("test_data") else []),
    ]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in fields})

    labels = list(dict.fromkeys(row["model"] for row in rows))
    references = {row["model"] for row in rows if row.get("kind") in (STAGE2, SSR_STAGE, BASELINE)}
    references |= set(STAGE2_LABELS.values()) & set(labels)
    models = [m for m in labels if m not in references]
    with_sr = bool(cfg.get("sr"))
    seeds = list(cfg.seeds)
    lines = [
        f"# Comparison `{cfg.preset}`: {', '.join(models)}",
        "",
        f"Mean ± sample std over seeds {seeds} ({len(seeds)} runs per model), test split "
        f"of the built-in data. {paper.metrics_note} n/a: the model has no such output"
        + (
            "; stage2_gt_*: the stage-2 SR networks on ground-truth inputs (reference)."
            if with_sr
            else "."
        ),
        "",
        "| model | params | "
        + " | ".join(labels_of[k] for k in columns)
        + " | wall (s/run) |"
        + (" stage-3 wall (s/run) |" if with_sr else ""),
        "|---" * (len(columns) + 3 + with_sr) + "|",
    ]
    for model in models + [m for m in labels if m in references]:
        runs = [r for r in rows if r["model"] == model]
        cells = [_fmt(*summarize([r.get(k, math.nan) for r in runs]), _digits(k)) for k in columns]
        cells.append(f"{statistics.fmean(r['wall_s'] for r in runs):.0f}")
        if with_sr:
            sr_walls = [r["sr_wall_s"] for r in runs if r.get("sr_wall_s") is not None]
            cells.append(f"{statistics.fmean(sr_walls):.0f}" if sr_walls else "n/a")
        lines.append(f"| {model} | {runs[0]['params']:,} | " + " | ".join(cells) + " |")
    claims = claim_lines(rows, paper.claims)
    lines += ["", f"## The {paper.title} paper's orderings on this data", ""]
    lines += claims or ["- (no pair of the paper's models in this preset)"]
    lines += [
        "",
        "## Notes",
        "",
        f"- {sr_note(cfg, rows)}",
        *([f"- {note}"] if (note := _anchor_note(cfg)) else []),
        *([f"- {note}"] if (note := _ssr_note(cfg)) else []),
        f"- Identical stage-1 budget for every model: `{' '.join(cfg.overrides)}`"
        + (f" `{' '.join(cfg.extra)}`" if cfg.get("extra") else "")
        + ". The final weights are tested (no checkpoint selection).",
        f"- Command: `{command}`",
        f"- Hardware: {hardware()}",
        f"- Total wall time: {total_s:.0f} s ({total_s / 60:.1f} min), finished "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        "## Runs",
        "",
        "Each run is `svblur-train` with these overrides:",
        "",
    ]
    for row in rows:
        steps = f", {row['steps']} steps" if row.get("steps") is not None else ""
        lines.append(
            f"- {row['model']}, seed {row['seed']} ({row['wall_s']:.0f} s{steps}): "
            f"`{row['command']}`"
        )
        if row.get("sr_command"):
            lines.append(
                f"  - stage 3 from {row['sr_stage2']} ({row['sr_wall_s']:.0f} s, "
                f"{row['sr_steps']} steps): `{row['sr_command']}`"
            )
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path
