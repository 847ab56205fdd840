"""``svblur-eval``: evaluate a checkpoint on the test split.

Example:
    svblur-eval ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
    svblur-eval experiment=nyuv2_bsr_stage3 data.root=/data/NYUv2-BSR ckpt_path=stage3.ckpt

Besides logging, it writes to the job's output folder (or ``report_dir=DIR``):

- ``metrics.csv`` / ``metrics.md``: one row per test group (e.g. ``Group1`` .. ``Group5``
  of the BSR data sets) plus their ``mean`` (the paper's tables), one column per metric;
  a single ``test`` row when the data module has no groups;
- ``per_image.csv``: one row per test image (group, index, name when the data set gives
  one, and each per-image metric) for systems that record them (the SR stages).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from svblur.models.checkpoints import CheckpointNotFoundError

from ._common import (
    CONFIG_PATH,
    apply_extras,
    build,
    exit_on_input_error,
    finish,
    metrics_as_floats,
    require,
    run_hydra_app,
)
from .train import check_checkpoint_fits, read_training_checkpoint

log = logging.getLogger("svblur")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt_path`` and return its test metrics."""
    apply_extras(cfg)
    ckpt_path = Path(require(cfg, "ckpt_path", "the path of a checkpoint to evaluate"))
    if not ckpt_path.is_file():
        raise CheckpointNotFoundError(f"ckpt_path: no checkpoint file at '{ckpt_path}'")
    checkpoint = read_training_checkpoint(ckpt_path)
    datamodule, model, trainer = build(cfg)
    check_checkpoint_fits(checkpoint, model, ckpt_path, resume=False)
    del checkpoint
    try:
        log.info("Testing %s", ckpt_path)
        trainer.test(
            model=model, datamodule=datamodule, ckpt_path=str(ckpt_path), weights_only=True
        )
        metrics = metrics_as_floats(trainer.callback_metrics)
    finally:
        finish(trainer.loggers)
    if trainer.is_global_zero:
        report_dir = Path(cfg.get("report_dir") or cfg.paths.output_dir)
        groups = list(getattr(datamodule, "test_group_names", None) or [])
        written = write_reports(
            metrics, groups, getattr(model, "test_results", None) or [], report_dir
        )
        for path in written:
            log.info("Wrote %s", path)
    return metrics


def metric_table(metrics: dict[str, float], groups: Sequence[str]) -> list[dict[str, Any]]:
    """Rows ``{"group": g, metric: value, ...}`` per test group plus ``mean``.

    Metric keys are ``test/<group>/<name>`` per group and ``test/<name>`` for the mean over
    groups (what the systems log); losses are left out. Without groups, one ``test`` row.
    """
    names = sorted(
        {
            key[len("test/") :]
            for key in metrics
            if key.startswith("test/")
            and not any(key.startswith(f"test/{g}/") for g in groups)
            and "loss" not in key
        }
    )
    if not groups:
        return [{"group": "test", **{n: metrics[f"test/{n}"] for n in names}}]
    rows = [
        {"group": g, **{n: metrics.get(f"test/{g}/{n}", float("nan")) for n in names}}
        for g in groups
    ]
    rows.append({"group": "mean", **{n: metrics[f"test/{n}"] for n in names}})
    return rows


def _markdown(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_reports(
    metrics: dict[str, float],
    groups: Sequence[str],
    per_image: Sequence[dict[str, Any]],
    out_dir: Path,
) -> list[Path]:
    """Write ``metrics.csv``, ``metrics.md`` and (when given) ``per_image.csv``.

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    rows = metric_table(metrics, groups)
    if any(len(r) > 1 for r in rows):
        _write_csv(rows, out_dir / "metrics.csv")
        (out_dir / "metrics.md").write_text(_markdown(rows))
        written += [out_dir / "metrics.csv", out_dir / "metrics.md"]
    if per_image:
        _write_csv(list(per_image), out_dir / "per_image.csv")
        written.append(out_dir / "per_image.csv")
    return written


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
@exit_on_input_error("svblur-eval")
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """Console-script entry point."""
    run_hydra_app(_hydra_main)


if __name__ == "__main__":
    main()
