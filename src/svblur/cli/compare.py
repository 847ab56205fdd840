"""``svblur-compare``: train several models with one budget over several seeds; tabulate.

Checks the CMOS paper's comparative claims on the built-in data: every model of a
preset (``conf/compare/<preset>.yaml``) is trained by :func:`svblur.cli.train.train`
with the same overrides (data, steps, batch size, learning rate), once per seed, then
tested on the same test split. With the preset's ``sr`` section, each of these stage-1
models is also measured on blind SR (the paper's stages 2 and 3): per seed, RRDB-SFT is
trained on the ground-truth maps (stage 2, shared by the models of that seed), then for
every model and seed it is fine-tuned on that model's frozen estimates and tested
(stage 3). The results go to ``<out_dir>/compare_<preset>.csv`` (one row per run) and
``<out_dir>/compare_<preset>.md`` (mean +- std per model, the paper's orderings checked
against them, the exact commands, the hardware, wall times).

Examples:
    svblur-compare                              # preset=small, 2-core CPU, ~35 min
    svblur-compare preset=full                  # one GPU
    svblur-compare preset=small seeds=[0,1] out_dir=/tmp/results
    svblur-compare preset=small 'only=[manet,cmos_full]'             # a subset of models
    svblur-compare preset=small 'overrides=[trainer.max_epochs=1]'   # replaces the list
    svblur-compare preset=small 'extra=[data.batch_size=2]'          # appended, every stage
    svblur-compare preset=small sr=null                              # no blind SR

Any ``key=value`` after the preset is merged into the preset (OmegaConf dotlist).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import platform
import re
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
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from svblur.systems.sr import BlindSRTask, NonBlindSRTask

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
    ("test/sr/ssim_y", "blind-SR SSIM-Y", True),
)

#: Labels of the stage-2 reference rows (RRDB-SFT tested on ground-truth maps, the
#: paper's "upper bound"), by the maps it takes: blur + semantics, or blur only.
STAGE2_LABELS: dict[str, str] = {"seg": "stage2_gt_blur_seg", "blur": "stage2_gt_blur"}

#: File (in each run's output folder) holding the weights at the end of training.
WEIGHTS_FILE = "final.ckpt"

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
    (
        "cmos_full",
        "manet",
        "test/sr/psnr_y",
        "Tab. 2/3: blind SR with CMOS's maps beats blind SR with MANet's",
    ),
    (
        STAGE2_LABELS["seg"],
        "cmos_full",
        "test/sr/psnr_y",
        "Tab. 2/3: SR from ground-truth maps is the upper bound of blind SR",
    ),
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
    sr = cfg.get("sr")
    if sr:
        for key in ("stage2", "stage3"):
            if not sr.get(key):
                raise ValueError(
                    f"comparison preset {preset!r}: sr.{key} must list the stage's "
                    f"svblur-train overrides (e.g. [model=rrdb_sft, trainer.max_epochs=4]), "
                    "or set sr=null to skip blind SR"
                )
        unknown = sorted(set(sr.get("blur_only") or []) - set(cfg.models))
        if unknown:
            raise ValueError(
                f"sr.blur_only={unknown}: not in the preset's models {list(cfg.models)}"
            )
    return cfg


_PLAIN_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = ("true", "false", "null", "nan", "inf")


def hydra_value(value: Any) -> str:
    """Write ``value`` (nested dicts and lists of plain values) in Hydra's override grammar.

    Strings are quoted unless they are plain names that Hydra reads back as the same
    string, so ``hydra_value({"a": [1, "x y"]})`` is ``{a:[1,"x y"]}``. Dict keys must be
    plain names (Hydra does not accept quoted keys).
    """
    if isinstance(value, (dict, DictConfig)):
        for key in value:
            if not (_PLAIN_KEY.fullmatch(str(key)) and str(key).lower() not in _KEYWORDS):
                raise ValueError(f"cannot write the dict key {key!r} as a Hydra override")
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN_STRING.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    if '"' not in text:
        return f'"{text}"'
    if "'" not in text:
        return f"'{text}'"
    raise ValueError(f"cannot write {text!r} as a Hydra override value (both quote characters)")


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


def _selected_models(cfg: DictConfig) -> list[str]:
    """The preset's model labels that this comparison runs (``only``, else all)."""
    only = list(cfg.get("only") or [])
    return [m for m in cfg.models if not only or m in only]


def _span(values: list[Any]) -> str:
    """``"96"``, or ``"96-128"`` when the runs differ; ``"?"`` when none is known."""
    known = sorted({int(v) for v in values if isinstance(v, int)})
    if not known:
        return "?"
    return str(known[0]) if len(known) == 1 else f"{known[0]}-{known[-1]}"


def sr_note(cfg: DictConfig, rows: list[dict[str, Any]]) -> str:
    """How the blind-SR columns were measured (stages 2 and 3), or why they are n/a."""
    sr = cfg.get("sr")
    if not sr:
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
    blur_only = set(sr.get("blur_only") or [])
    models = _selected_models(cfg)
    kinds = {
        "seg": (
            f"with the semantic map (seg_encoding={net.get('seg_encoding', 'index')}) for "
            + ", ".join(m for m in models if m not in blur_only)
        ),
        "blur": (
            "blur-only (seg_encoding=none) for "
            + ", ".join(m for m in models if m in blur_only)
            + ", which predict no semantic map"
        ),
    }
    parts = []
    for kind, label in STAGE2_LABELS.items():
        runs = [r for r in rows if r["model"] == label]
        if runs:
            parts.append(f"{kinds[kind]} ({label}, {runs[0]['params']:,} parameters)")
    stage2_steps = _span([r.get("steps") for r in rows if r["model"] in STAGE2_LABELS.values()])
    stage3_steps = _span([r.get("sr_steps") for r in rows])
    return (
        f"Blind SR (the paper's stages 2 and 3), RRDB-SFT of {size}. Stage 2, once per "
        "seed and shared by that seed's models: RRDB-SFT trained on the ground-truth blur "
        f"and semantic maps (`overrides` + `{' '.join(sr.stage2)}`, {stage2_steps} steps), "
        + ("; ".join(parts) or "(none trained yet)")
        + ". The stage2_gt_* rows are these networks tested on ground-truth maps (the "
        "paper's upper bound; they get none of the stage-3 steps). Stage 3, per model and "
        "seed, the same budget for every model: the model's final stage-1 weights, frozen, "
        "estimate the maps from the LR image; RRDB-SFT starts from the matching stage-2 "
        "weights of that seed, is fine-tuned on those estimates (`overrides` + "
        f"`{' '.join(sr.stage3)}`, {stage3_steps} steps), then tested. Models that share a "
        "stage-2 network differ only in their estimates; between the two groups the SR "
        "network's input differs too (blur only vs blur + semantics), as in the paper. "
        "PSNR-Y/SSIM-Y: Y channel, a border of `scale` pixels cropped, SR rounded to 8 "
        "bits (svblur.metrics.sr)."
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
            value = row.get(key, math.nan)
            by_model.setdefault(row["model"], {}).setdefault(key, []).append(value)
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
    """Write ``compare_<preset>.csv`` (per run) and ``compare_<preset>.md`` (summary).

    Rows of the stage-1 models carry their stage-3 (blind-SR) results and ``sr_*`` columns;
    the ``stage2_gt_*`` rows are the stage-2 networks, listed after the models.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"compare_{cfg.preset}"
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    fields = [
        "model",
        "seed",
        "params",
        "wall_s",
        *(k for k, _, _ in METRICS),
        "command",
        "steps",
        "sr_stage2",
        "sr_steps",
        "sr_wall_s",
        "sr_command",
    ]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in fields})

    labels = list(dict.fromkeys(row["model"] for row in rows))
    references = set(STAGE2_LABELS.values())
    models = [m for m in labels if m not in references]
    with_sr = bool(cfg.get("sr"))
    seeds = list(cfg.seeds)
    lines = [
        f"# Comparison `{cfg.preset}`: {', '.join(models)}",
        "",
        f"Mean ± sample std over seeds {seeds} ({len(seeds)} runs per model), test split "
        "of the built-in data. Blur PSNR/SSIM: sigma/5, range 1; MAE in sigma pixels "
        "(lower is better); boundary = pixels within 3 px of a depth jump > 10 % "
        "(svblur.metrics.boundary). n/a: the model has no such output"
        + (
            "; stage2_gt_*: the stage-2 SR networks on ground-truth maps (reference)."
            if with_sr
            else "."
        ),
        "",
        "| model | params | "
        + " | ".join(lbl for _, lbl, _ in METRICS)
        + " | wall (s/run) |"
        + (" stage-3 wall (s/run) |" if with_sr else ""),
        "|---" * (len(METRICS) + 3 + with_sr) + "|",
    ]
    for model in models + [m for m in labels if m in references]:
        runs = [r for r in rows if r["model"] == model]
        cells = [
            _fmt(*summarize([r.get(k, math.nan) for r in runs]), _digits(k)) for k, _, _ in METRICS
        ]
        cells.append(f"{statistics.fmean(r['wall_s'] for r in runs):.0f}")
        if with_sr:
            sr_walls = [r["sr_wall_s"] for r in runs if r.get("sr_wall_s") is not None]
            cells.append(f"{statistics.fmean(sr_walls):.0f}" if sr_walls else "n/a")
        lines.append(f"| {model} | {runs[0]['params']:,} | " + " | ".join(cells) + " |")
    claims = claim_lines(rows)
    lines += ["", "## The paper's orderings on this data", ""]
    lines += claims or ["- (no pair of the paper's models in this preset)"]
    lines += [
        "",
        "## Notes",
        "",
        f"- {sr_note(cfg, rows)}",
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


def run_comparison(cfg: DictConfig, command: str) -> list[dict[str, Any]]:
    """Train and test every model of the preset ``cfg`` for every seed; write the tables.

    With the preset's ``sr`` section, every stage-1 run is followed by its stage 3 (blind
    SR), after the seed's stage 2 where it is not trained yet (see :class:`_Runner`).

    Args:
        cfg: A preset from :func:`load_preset`.
        command: The command line recorded in the tables.

    Returns:
        One dict per run: ``model``, ``seed``, ``params``, ``wall_s``, ``command``, every
        key of :data:`METRICS` (NaN where not logged) and, with blind SR, ``steps`` and the
        ``sr_*`` entries; the stage-2 runs are rows labelled by :data:`STAGE2_LABELS`.
    """
    out_dir = Path(cfg.get("out_dir") or "results")
    log_dir = Path(cfg.get("log_dir") or "logs") / f"compare_{cfg.preset}"
    runner = _Runner(cfg, command, out_dir, log_dir)
    with shared_render_cache():
        runner.run()
    return runner.rows


def _global_step(weights: Path) -> int:
    checkpoint = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    return int(checkpoint["global_step"])


def _require_system(cfg: DictConfig, expected: type, where: str, example: str) -> None:
    target = get_class(cfg.model._target_)
    if not (isinstance(target, type) and issubclass(target, expected)):
        raise ValueError(
            f"{where} must select a {expected.__name__} model ({example}), got "
            f"model._target_={cfg.model._target_}"
        )


class _Runner:
    """Runs the stages of one comparison, keeps the rows, writes the tables after each run.

    Output folders under ``log_dir``: ``<model>/seed<N>/`` (stage 1),
    ``<model>/seed<N>/stage3/`` and ``stage2_gt_*/seed<N>/``; with blind SR each holds the
    weights at the end of training in :data:`WEIGHTS_FILE`.
    """

    def __init__(self, cfg: DictConfig, command: str, out_dir: Path, log_dir: Path) -> None:
        self.cfg = cfg
        self.command = command
        self.out_dir = out_dir
        self.log_dir = log_dir
        self.sr: DictConfig | None = cfg.get("sr") or None
        self.blur_only = set(self.sr.get("blur_only") or []) if self.sr else set()
        self.rows: list[dict[str, Any]] = []
        #: (seed, "seg" | "blur") -> the stage-2 row (label, weights) of that seed.
        self.stage2: dict[tuple[int, str], dict[str, Any]] = {}
        self.start = time.perf_counter()

    def run(self) -> None:
        """Every selected model and seed: stage 1, then (with ``sr``) stage 3."""
        only = list(self.cfg.get("only") or [])
        unknown = sorted(set(only) - set(self.cfg.models))
        if unknown:
            raise ValueError(f"only={unknown}: not in the preset's models {list(self.cfg.models)}")
        for model in _selected_models(self.cfg):
            for seed in self.cfg.seeds:
                row, job_cfg, metrics = self.stage1(model, int(seed))
                if self.sr:
                    self.stage3(row, job_cfg, metrics)

    def write(self) -> None:
        # After every run, so that an interrupted comparison keeps its results.
        elapsed = time.perf_counter() - self.start
        write_tables(self.rows, self.cfg, self.command, elapsed, self.out_dir)

    def _tail(self, seed: int) -> list[str]:
        return [f"seed={seed}", f"task_name=compare_{self.cfg.preset}"]

    def _net_overrides(self, prefix: str) -> list[str]:
        """The preset's SR network size as overrides of ``prefix`` (e.g. ``model.net``)."""
        assert self.sr is not None
        net = self.sr.get("net") or {}
        return [f"{prefix}.{k}={hydra_value(v)}" for k, v in net.items()]

    def _add_row(
        self, label: str, seed: int, info: dict[str, Any], metrics: dict[str, float]
    ) -> dict[str, Any]:
        """Append the row of a finished run (its :data:`METRICS`, NaN where not logged)."""
        row: dict[str, Any] = {"model": label, "seed": seed, **info}
        row.update({k: float(metrics.get(k, math.nan)) for k, _, _ in METRICS})
        self.rows.append(row)
        return row

    def _train(
        self, job_cfg: DictConfig, overrides: list[str], count_parameters: bool = True
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """Run one composed ``svblur-train`` job; with blind SR, save its final weights."""
        info: dict[str, Any] = {
            "command": "svblur-train " + " ".join(shlex.quote(o) for o in overrides)
        }
        if count_parameters:
            info["params"] = _trainable_parameters(job_cfg)
        weights = Path(job_cfg.paths.output_dir) / WEIGHTS_FILE if self.sr else None
        t0 = time.perf_counter()
        metrics = train(job_cfg, weights_path=weights)
        info["wall_s"] = round(time.perf_counter() - t0, 1)
        if weights is not None:
            info["weights"] = weights
            info["steps"] = _global_step(weights)
        return metrics, info

    def stage1(self, model: str, seed: int) -> tuple[dict[str, Any], DictConfig, dict[str, float]]:
        """Train and test ``model`` (its blur/semantics metrics); append its row."""
        overrides = [
            *self.cfg.models[model],
            *self.cfg.overrides,
            *(self.cfg.get("extra") or []),
            *self._tail(seed),
        ]
        log.info("compare: %s seed %s", model, seed)
        job_cfg = compose_train_config(overrides, self.log_dir / model / f"seed{seed}")
        metrics, info = self._train(job_cfg, overrides)
        row = self._add_row(model, seed, info, metrics)
        log.info("compare: %s seed %s done in %.0f s", model, seed, info["wall_s"])
        self.write()
        return row, job_cfg, metrics

    def stage2_for(self, seed: int, kind: str) -> dict[str, Any]:
        """The seed's stage-2 row of ``kind`` (``seg`` or ``blur``), trained on first use."""
        if (seed, kind) in self.stage2:
            return self.stage2[(seed, kind)]
        assert self.sr is not None
        label = STAGE2_LABELS[kind]
        overrides = [
            *self.cfg.overrides,
            *self.sr.stage2,
            *self._net_overrides("model.net"),
            *(self.cfg.get("extra") or []),
            *(["model.net.seg_encoding=none"] if kind == "blur" else []),
            *self._tail(seed),
        ]
        log.info("compare: stage 2 (%s) seed %s", label, seed)
        job_cfg = compose_train_config(overrides, self.log_dir / label / f"seed{seed}")
        _require_system(job_cfg, NonBlindSRTask, "sr.stage2", "model=rrdb_sft")
        metrics, info = self._train(job_cfg, overrides)
        row = self._add_row(label, seed, info, metrics)
        self.stage2[(seed, kind)] = row
        log.info("compare: stage 2 (%s) seed %s done in %.0f s", label, seed, info["wall_s"])
        self.write()
        return row

    def stage3(
        self, row: dict[str, Any], stage1_cfg: DictConfig, metrics: dict[str, float]
    ) -> None:
        """Fine-tune RRDB-SFT on the frozen estimates of ``row``'s model; test; fill the row."""
        assert self.sr is not None
        model, seed = row["model"], row["seed"]
        kind = "blur" if model in self.blur_only else "seg"
        if kind == "seg" and "test/seg/miou" not in metrics:
            raise ValueError(
                f"{model} predicts no semantic map (it logged no test/seg/miou), so its "
                f"blind SR needs the blur-only RRDB-SFT: add {model} to sr.blur_only"
            )
        stage2 = self.stage2_for(seed, kind)
        estimator = OmegaConf.to_container(stage1_cfg.model.net, resolve=True)
        overrides = [
            *self.cfg.overrides,
            *self.sr.stage3,
            *self._net_overrides("model.net.sr"),
            *(self.cfg.get("extra") or []),
            # the stage-1 network, as configured for that run
            "~model.net.estimator",
            f"+model.net.estimator={hydra_value(estimator)}",
            *(["model.net.sr.seg_encoding=none"] if kind == "blur" else []),
            f"model.estimator_ckpt={hydra_value(str(row['weights']))}",
            f"model.sr_ckpt={hydra_value(str(stage2['weights']))}",
            *self._tail(seed),
        ]
        log.info("compare: stage 3 of %s seed %s (from %s)", model, seed, stage2["model"])
        job_cfg = compose_train_config(overrides, self.log_dir / model / f"seed{seed}" / "stage3")
        _require_system(job_cfg, BlindSRTask, "sr.stage3", "model=blind_sr")
        if OmegaConf.to_container(job_cfg.model.net.estimator, resolve=True) != estimator:
            raise RuntimeError(
                f"stage 3 of {model}: the composed model.net.estimator differs from the "
                "stage-1 network (an override value was not written back faithfully)"
            )
        sr_metrics, info = self._train(job_cfg, overrides, count_parameters=False)
        row.update({k: float(sr_metrics.get(k, math.nan)) for k, _, _ in METRICS if "/sr/" in k})
        row.update(
            sr_stage2=stage2["model"],
            sr_steps=info["steps"],
            sr_wall_s=info["wall_s"],
            sr_command=info["command"],
            sr_weights=info["weights"],
        )
        # The frozen estimator is the stage-1 network: it measures the same blur again.
        before, after = metrics.get("test/blur/psnr"), sr_metrics.get("test/blur/psnr")
        if before is not None and after is not None and abs(before - after) > 0.01:
            log.warning(
                "compare: stage 3 of %s seed %s measures blur PSNR %.4f dB, stage 1 %.4f dB: "
                "is the estimator the stage-1 network?",
                model,
                seed,
                after,
                before,
            )
        log.info("compare: stage 3 of %s seed %s done in %.0f s", model, seed, info["wall_s"])
        self.write()


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
        "compare: %d rows (%d with blind SR); tables in %s",
        len(rows),
        sum(1 for r in rows if r.get("sr_command")),
        out_dir / f"compare_{cfg.preset}.{{md,csv}}",
    )


if __name__ == "__main__":
    main()
