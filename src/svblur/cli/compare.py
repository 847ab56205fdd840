"""``svblur-compare``: train several models with one budget over several seeds; tabulate.

Checks the CMOS paper's comparative claims on the built-in data: every model of a
preset (``conf/compare/<preset>.yaml``) is trained by :func:`svblur.cli.train.train`
with the same overrides (data, steps, batch size, learning rate), once per seed, then
tested on the same test split. The results go to ``<out_dir>/compare_<preset>.csv``
(one row per run) and ``<out_dir>/compare_<preset>.md`` (mean +- std per model, the
paper's orderings checked against them, the exact command, the hardware, wall times).

Examples:
    svblur-compare                              # preset=small, 2-core CPU, ~30 min
    svblur-compare preset=full                  # one GPU
    svblur-compare preset=small seeds=[0,1] out_dir=/tmp/results
    svblur-compare preset=small 'only=[manet,cmos_full]'             # a subset of models
    svblur-compare preset=small 'overrides=[trainer.max_epochs=1]'   # replaces the list
    svblur-compare preset=small 'extra=[data.batch_size=2]'          # appended to it

Any ``key=value`` after the preset is merged into the preset (OmegaConf dotlist).
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ._common import config_dir, ensure_tty_safe
from .train import train

log = logging.getLogger("svblur")

#: Columns of the results table: (metric key, label, higher is better).
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("test/blur/psnr", "blur PSNR (dB)", True),
    ("test/blur/ssim", "blur SSIM", True),
    ("test/blur/mae", "blur MAE (px)", False),
    ("test/blur/boundary_mae", "boundary MAE (px)", False),
    ("test/blur/boundary_psnr", "boundary PSNR (dB)", True),
    ("test/seg/miou", "mIoU", True),
    ("test/sr/psnr_y", "blind-SR PSNR-Y (dB)", True),
)

#: The paper's orderings (better model, worse model, metric, where the paper states it).
CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    (
        "cmos_full",
        "manet",
        "test/blur/psnr",
        "Tab. 2/3 (SR): CMOS outperforms MANet by large margins",
    ),
    (
        "cmos_full",
        "manet",
        "test/blur/boundary_mae",
        "the paper's motivation: semantics help at depth edges",
    ),
    (
        "cmos_single_blur",
        "cmos_full",
        "test/blur/psnr",
        "Tab. 7: single-task blur slightly higher, 24.58 vs 24.52 dB",
    ),
    (
        "cmos_full",
        "cmos_single_blur",
        "test/blur/boundary_mae",
        "the paper's motivation: semantics help at depth edges",
    ),
    ("cmos_full", "cmos_no_gia", "test/blur/psnr", "Tab. 5: full GIA best on blur PSNR"),
    ("cmos_full", "cmos_no_gia", "test/seg/miou", "Tab. 5: full GIA best on mIoU"),
)


def load_preset(args: Sequence[str]) -> DictConfig:
    """Load ``conf/compare/<preset>.yaml`` and merge the ``key=value`` ``args`` into it.

    Args:
        args: Command-line arguments such as ``["preset=small", "seeds=[0,1]"]``.
    """
    dotlist = list(args)
    preset = "small"
    rest = []
    for arg in dotlist:
        if "=" not in arg:
            raise ValueError(
                f"svblur-compare takes key=value arguments (e.g. preset=small seeds=[0,1]), "
                f"got {arg!r}"
            )
        key, value = arg.split("=", 1)
        if key == "preset":
            preset = value
        else:
            rest.append(arg)
    folder = Path(config_dir()) / "compare"
    path = folder / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise FileNotFoundError(f"no comparison preset {preset!r} ({path}); known: {known}")
    cfg = OmegaConf.load(path)
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(rest))
    with open_dict(cfg):
        cfg.preset = preset
    for key in ("seeds", "models", "overrides"):
        if not cfg.get(key):
            raise ValueError(f"comparison preset {preset!r} needs a non-empty '{key}'")
    return cfg


def compose_train_config(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/train.yaml`` with ``overrides`` as ``svblur-train`` would, outside a Hydra run.

    Args:
        overrides: ``svblur-train`` overrides.
        output_dir: The job's output folder (checkpoints, CSV logs).
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent)
        del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


#: Data-set attributes that do not change what :meth:`SyntheticDefocus.render` returns.
_RENDER_IRRELEVANT = frozenset({"augment", "cache"})


@contextmanager
def shared_render_cache() -> Iterator[dict]:
    """Render each sample of the built-in data set once for all runs of a comparison.

    Every run builds its own data module, and on a CPU rendering a sample (the defocus
    engine) costs more than a training step of MANet. All runs draw the same samples
    (same data settings and seed), so :meth:`SyntheticDefocus.render` is memoized,
    within this context only, by the data set's public settings and the sample index.
    Augmentation comes after rendering and stays per run. Settings whose ``repr`` is not
    a value (an object address) are never matched, so the cache can only miss, never
    mix up data sets.

    Yields:
        The cache (``(settings, index) -> rendered sample``).
    """
    from svblur.data.synthetic import SyntheticDefocus

    original = SyntheticDefocus.render
    store: dict = {}

    def render(self, index: int):
        settings = repr(
            sorted(
                (k, v)
                for k, v in vars(self).items()
                if not k.startswith("_") and k not in _RENDER_IRRELEVANT
            )
        )
        if " at 0x" in settings:
            return original(self, index)
        key = (settings, int(index))
        if key not in store:
            store[key] = original(self, index)
        return store[key]

    SyntheticDefocus.render = render
    try:
        yield store
    finally:
        SyntheticDefocus.render = original


def _trainable_parameters(cfg: DictConfig) -> int:
    net = instantiate(cfg.model.net, _convert_="all")
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def hardware() -> str:
    """One line describing the machine: CPU model and cores, GPU if any, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [f"{cpu}, {cores} cores available, {torch.get_num_threads()} torch threads"]
    if torch.cuda.is_available():
        parts.append(f"GPU: {torch.cuda.get_device_name(0)}")
    else:
        parts.append("no GPU")
    parts.append(f"torch {torch.__version__}, {platform.system()} {platform.release()}")
    return "; ".join(parts)


def stage3_note() -> str:
    """Why the blind-SR column is (not) filled."""
    if importlib.util.find_spec("svblur.systems.sr") is None:
        return (
            "Blind-SR PSNR-Y (stage 3: RRDB-SFT on frozen stage-1 estimates) is not "
            "measured: this checkout has no stage-3 system (svblur.systems.sr)."
        )
    return (
        "Blind-SR PSNR-Y is not measured: a stage-3 system (svblur.systems.sr) exists, but "
        "this runner does not yet train stage 2 (RRDB-SFT) and fine-tune stage 3 per model "
        "(MANet and CMOS both return {'blur': ...}; MANet has no 'seg')."
    )


def summarize(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for fewer than two values)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    mean = statistics.fmean(finite)
    std = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return mean, std


def _fmt(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _digits(key: str) -> int:
    return 2 if "psnr" in key else 4


def claim_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per paper ordering: whether it holds here, and by how much."""
    by_model: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for key, _, _ in METRICS:
            by_model.setdefault(row["model"], {}).setdefault(key, []).append(row[key])
    higher = {key: better for key, _, better in METRICS}
    lines = []
    for good, bad, key, source in CLAIMS:
        if good not in by_model or bad not in by_model:
            continue
        (m_good, s_good), (m_bad, s_bad) = (
            summarize(by_model[good][key]),
            summarize(by_model[bad][key]),
        )
        if math.isnan(m_good) or math.isnan(m_bad):
            continue
        diff = m_good - m_bad
        holds = diff > 0 if higher[key] else diff < 0
        spread = math.hypot(s_good, s_bad) if not (math.isnan(s_good) or math.isnan(s_bad)) else 0
        clear = abs(diff) > spread if spread > 0 else None
        verdict = "holds" if holds else "does NOT hold"
        if clear is False:
            verdict += " (difference within seed spread)"
        label = next(lbl for k, lbl, _ in METRICS if k == key)
        lines.append(
            f"- {good} {'>' if higher[key] else '<'} {bad} on {label} ({source}): {verdict}; "
            f"{m_good:.4f} vs {m_bad:.4f}"
        )
    return lines


def write_tables(
    rows: list[dict[str, Any]], cfg: DictConfig, command: str, total_s: float, out_dir: Path
) -> tuple[Path, Path]:
    """Write ``compare_<preset>.csv`` (per run) and ``compare_<preset>.md`` (summary)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"compare_{cfg.preset}"
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    fields = ["model", "seed", "params", "wall_s", *(k for k, _, _ in METRICS), "command"]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in fields})

    models = list(dict.fromkeys(row["model"] for row in rows))
    seeds = list(cfg.seeds)
    lines = [
        f"# Comparison `{cfg.preset}`: {', '.join(models)}",
        "",
        f"Mean ± sample std over seeds {seeds} ({len(seeds)} runs per model), test split "
        "of the built-in data. Blur PSNR/SSIM: sigma/5, range 1; MAE in sigma pixels "
        "(lower is better); boundary = pixels within 3 px of a depth jump > 10 % "
        "(svblur.metrics.boundary). n/a: the model has no such output.",
        "",
        "| model | params | " + " | ".join(lbl for _, lbl, _ in METRICS) + " | wall (s/run) |",
        "|---" * (len(METRICS) + 3) + "|",
    ]
    for model in models:
        runs = [r for r in rows if r["model"] == model]
        cells = [_fmt(*summarize([r[k] for r in runs]), _digits(k)) for k, _, _ in METRICS]
        wall = statistics.fmean(r["wall_s"] for r in runs)
        lines.append(
            f"| {model} | {runs[0]['params']:,} | " + " | ".join(cells) + f" | {wall:.0f} |"
        )
    claims = claim_lines(rows)
    lines += ["", "## The paper's orderings on this data", ""]
    lines += claims or ["- (no pair of the paper's models in this preset)"]
    lines += [
        "",
        "## Notes",
        "",
        f"- {stage3_note()}",
        f"- Identical budget for every model: `{' '.join(cfg.overrides)}`"
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
        lines.append(
            f"- {row['model']}, seed {row['seed']} ({row['wall_s']:.0f} s): `{row['command']}`"
        )
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def run_comparison(cfg: DictConfig, command: str) -> list[dict[str, Any]]:
    """Train and test every model of the preset ``cfg`` for every seed; write the tables.

    Args:
        cfg: A preset from :func:`load_preset`.
        command: The command line recorded in the tables.

    Returns:
        One dict per run: ``model``, ``seed``, ``params``, ``wall_s``, ``command`` and
        every key of :data:`METRICS` (NaN where not logged).
    """
    out_dir = Path(cfg.get("out_dir") or "results")
    log_dir = Path(cfg.get("log_dir") or "logs") / f"compare_{cfg.preset}"
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with shared_render_cache():
        _run_all(cfg, command, rows, start, out_dir, log_dir)
    return rows


def _run_all(
    cfg: DictConfig,
    command: str,
    rows: list[dict[str, Any]],
    start: float,
    out_dir: Path,
    log_dir: Path,
) -> None:
    only = list(cfg.get("only") or [])
    unknown = sorted(set(only) - set(cfg.models))
    if unknown:
        raise ValueError(f"only={unknown}: not in the preset's models {list(cfg.models)}")
    for model, model_overrides in cfg.models.items():
        if only and model not in only:
            continue
        for seed in cfg.seeds:
            overrides = [
                *model_overrides,
                *cfg.overrides,
                *(cfg.get("extra") or []),
                f"seed={seed}",
                f"task_name=compare_{cfg.preset}",
            ]
            job_cfg = compose_train_config(overrides, log_dir / model / f"seed{seed}")
            params = _trainable_parameters(job_cfg)
            log.info("compare: %s seed %s (%s parameters)", model, seed, f"{params:,}")
            t0 = time.perf_counter()
            metrics = train(job_cfg)
            wall = time.perf_counter() - t0
            row: dict[str, Any] = {
                "model": model,
                "seed": int(seed),
                "params": params,
                "wall_s": round(wall, 1),
                "command": "svblur-train " + " ".join(shlex.quote(o) for o in overrides),
            }
            row.update({k: float(metrics.get(k, math.nan)) for k, _, _ in METRICS})
            rows.append(row)
            log.info("compare: %s seed %s done in %.0f s", model, seed, wall)
            # Write after every run, so that an interrupted comparison keeps its results.
            write_tables(rows, cfg, command, time.perf_counter() - start, out_dir)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: ``svblur-compare [preset=NAME] [key=value ...]``."""
    ensure_tty_safe()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    cfg = load_preset(args)
    command = "svblur-compare " + " ".join(shlex.quote(a) for a in args)
    rows = run_comparison(cfg, command)
    out_dir = Path(cfg.get("out_dir") or "results")
    log.info(
        "compare: %d runs; tables in %s",
        len(rows),
        out_dir / f"compare_{cfg.preset}.{{md,csv}}",
    )


if __name__ == "__main__":
    main()
