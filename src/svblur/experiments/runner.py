"""The runner of a comparison: every model of a preset trained and tested per seed.

Every model of a preset is trained by ``svblur-train``'s :func:`train` with the same
overrides (data, steps, batch size, learning rate), once per seed, then tested on the same
test split. A model is one of two kinds, read from its composed config's system class:

- an *estimator* (blur / semantic maps or a kernel field, e.g. CMOS, MANet): with the
  preset's ``sr`` section it is also measured on blind SR (the paper's stages 2 and 3):
  per seed, RRDB-SFT is trained on the ground-truth inputs of the kind the estimator
  predicts (stage 2, shared by the models of that seed and kind), then for every model
  and seed it is fine-tuned on that model's frozen estimates and tested (stage 3);
- a *direct blind-SR model* (a :class:`~svblur.systems.sr.SuperResolutionTask`, e.g.
  ArcSR, or a GAN-trained generator, :class:`~svblur.systems.GANSRTask` /
  :class:`~svblur.systems.PBaSRTask`): trained on LR -> HR and tested on SR once per seed;
  no stage 2 or 3.

A preset may also name an ``anchor`` model (PBaSR): it runs first, and every other model
of a seed starts from the generator that the anchor's run of that seed exported
(``model.anchor_ckpt``) and, with ``anchor_discriminator: true``, its discriminators from
the discriminator of that run (its final checkpoint, :data:`WEIGHTS_FILE`, as
``model.anchor_discriminator_ckpt``); and ``test_data``, the ``svblur-train`` overrides of
a job whose ``data`` is the one test set of every model (each model is then trained with
its own data, e.g. general or blur only, and its final weights are tested there by
:func:`evaluate`). Models that export a generator (``model.export_path``) are also
measured deployed: the export loaded into a plain ``model.net`` (its parameters) and its
time per test image (:func:`inference_cost`).

A preset with an ``ssr`` section (SSR) trains, once per seed and on first use, SSR's
stage 1 (``ssr.stage1``: DKENet and its depth network, :class:`~svblur.systems.ssr.
KernelEstimationTask`), stage 2 (``ssr.stage2``: RRDB-SFT on ground-truth kernel codes)
and, with ``ssr.no_depth_stage1``, a DKENet trained without depth; rows of kind
:data:`SSR_STAGE`. A model whose system is :class:`~svblur.systems.ssr.SVKRTask`
(``experiment=synthetic_ssr_svkr``) is given those checkpoints, tested, and its logged
``test/t{T}/...`` and ``test/no_depth/t{T}/...`` become rows ``<model>_t1 .. <model>_tT``
and ``<model>_no_depth`` (kind :data:`SVKR_EVAL`); a
:class:`~svblur.systems.DiffusionSRTask` with ``model.condition=svkr`` gets the seed's
stage-1/2 checkpoints and networks as its frozen SVKR (SSR's stage 3).

The tables (:mod:`svblur.experiments.report`) are written after every run.

All runs draw the same samples of the built-in data set, so they share one render cache
(:func:`svblur.data.synthetic.shared_render_cache`): each sample is rendered once.
"""

from __future__ import annotations

import copy
import logging
import math
import shlex
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from svblur.checkpoints import SR_KINDS, build_network, read_checkpoint, read_state_dict
from svblur.data.synthetic import shared_render_cache
from svblur.experiments.baselines import baseline_scores
from svblur.experiments.claims import (
    BASELINE,
    DIRECT_SR,
    ESTIMATOR,
    METRICS,
    SSR_STAGE,
    STAGE2,
    STAGE2_LABELS,
    SVKR_EVAL,
)
from svblur.experiments.overrides import compose_train_config, hydra_value
from svblur.experiments.presets import selected_models
from svblur.experiments.report import write_tables
from svblur.experiments.training import evaluate, train
from svblur.systems.sr import BlindSRTask, NonBlindSRTask
from svblur.systems.ssr import KernelCodeSRTask, KernelEstimationTask

__all__ = ["WEIGHTS_FILE", "model_kind", "run_comparison", "train"]

log = logging.getLogger("svblur")

#: File (in each run's output folder) holding the weights at the end of training.
WEIGHTS_FILE = "final.ckpt"


def _trainable_parameters(cfg: DictConfig) -> int:
    net = instantiate(cfg.model.net, _convert_="all")
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _first_test_images(data_cfg: DictConfig | dict) -> torch.Tensor:
    """The LR images ``(B, 3, h, w)`` of the first test batch of the data ``data_cfg``."""
    datamodule = instantiate(data_cfg, _convert_="all")
    datamodule.setup("test")
    loaders = datamodule.test_dataloader()
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    return next(iter(loader))["lr"]


@torch.no_grad()
def inference_cost(net_cfg: DictConfig, export: Path, lr: torch.Tensor) -> dict[str, float]:
    """The deployed generator: ``export`` (a plain state dict) loaded strictly into the
    network ``net_cfg``; its parameters and the time of a forward pass of ``lr``
    ``(B, 3, h, w)`` per image in ms, the best of 11 passes after one warm-up (the least
    disturbed by other processes on a shared machine).

    Raises:
        RuntimeError: The export does not fit the network (extra or missing weights).
    """
    net = instantiate(net_cfg, _convert_="all")
    net.load_state_dict(read_state_dict(export), strict=True)
    net.eval()
    net(lr)
    times = []
    for _ in range(11):
        t0 = time.perf_counter()
        net(lr)
        times.append(time.perf_counter() - t0)
    return {
        "inference/params": float(sum(p.numel() for p in net.parameters())),
        "inference/ms": 1000 * min(times) / lr.shape[0],
    }


def run_comparison(cfg: DictConfig, command: str) -> list[dict[str, Any]]:
    """Train and test every model of the preset ``cfg`` for every seed; write the tables.

    With the preset's ``sr`` section, every stage-1 run of an estimator is followed by its
    stage 3 (blind SR), after the seed's stage 2 where it is not trained yet; a direct
    blind-SR model is measured by its own test (see :class:`_Runner`).

    Args:
        cfg: A preset from :func:`svblur.experiments.load_preset`.
        command: The command line recorded in the tables.

    Returns:
        One dict per run: ``model``, ``seed``, ``kind`` (:data:`ESTIMATOR`,
        :data:`DIRECT_SR` or :data:`STAGE2`), ``params``, ``wall_s``, ``command``, every
        key of :data:`METRICS` (NaN where not logged) and, with blind SR, ``steps`` and,
        for estimators, the ``sr_*`` entries of stage 3; the stage-2 runs are rows
        labelled by :data:`STAGE2_LABELS`. The trivial baselines of each seed (rows
        ``constant`` and ``bicubic`` of kind :data:`BASELINE`) are in the tables, after
        the models, and in ``runner.baseline_rows``; they are not returned.
    """
    out_dir = Path(cfg.get("out_dir") or "results")
    log_dir = Path(cfg.get("log_dir") or "logs") / f"compare_{cfg.preset}"
    runner = _Runner(cfg, command, out_dir, log_dir)
    with shared_render_cache():
        runner.run()
    return runner.rows


def _trainable_parameters_of(net: dict[str, Any]) -> int:
    """Trainable parameters of the network built from the plain config ``net``."""
    return sum(p.numel() for p in build_network(net).parameters() if p.requires_grad)


def _global_step(weights: Path) -> int:
    checkpoint = read_checkpoint(weights, mmap=True)
    return int(checkpoint["global_step"])


def _system(cfg: DictConfig) -> type:
    target = get_class(cfg.model._target_)
    return target if isinstance(target, type) else type(None)


def _require_system(cfg: DictConfig, expected: type, where: str, example: str) -> None:
    if not issubclass(_system(cfg), expected):
        raise ValueError(
            f"{where} must select a {expected.__name__} model ({example}), got "
            f"model._target_={cfg.model._target_}"
        )


def _kind(cfg: DictConfig) -> str | None:
    """The :attr:`~svblur.systems.TrainingSystem.kind` of a composed config's system."""
    return getattr(_system(cfg), "kind", None)


def model_kind(cfg: DictConfig) -> str:
    """A composed stage-1 config's role, from its system's ``kind``: :data:`DIRECT_SR` for
    a model trained on SR itself (kinds :data:`~svblur.checkpoints.SR_KINDS`, e.g. ArcSR
    or a GAN-trained generator), :data:`SVKR_EVAL` for SSR's SVKR evaluation
    (``kernel_regression``), else :data:`ESTIMATOR` (blur / semantic maps or kernels,
    measured on SR by stages 2 and 3)."""
    kind = _kind(cfg)
    if kind == "kernel_regression":
        return SVKR_EVAL
    return DIRECT_SR if kind in SR_KINDS else ESTIMATOR


def measure_baselines(data_cfg: DictConfig, blur_norm: float) -> dict[str, dict[str, float]]:
    """The trivial baselines of the data ``data_cfg`` (see
    :func:`~svblur.experiments.baselines.baseline_scores`)."""
    datamodule = instantiate(data_cfg, _convert_="all")
    return baseline_scores(datamodule, int(data_cfg.scale), blur_norm)


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
        #: (seed, "seg" | "blur" | "kernels") -> the stage-2 row (label, weights) of that seed.
        self.stage2: dict[tuple[int, str], dict[str, Any]] = {}
        self.anchor: str | None = cfg.get("anchor") or None
        #: seed -> the generator exported by the anchor's run of that seed.
        self.anchors: dict[int, Path] = {}
        #: With the preset's ``anchor_discriminator``: every other model also starts its
        #: discriminators from the anchor's (seed -> the anchor run's final checkpoint).
        self.anchor_discriminator = bool(self.anchor and cfg.get("anchor_discriminator"))
        self.anchor_weights: dict[int, Path] = {}
        self.test_data: list[str] | None = (
            None if cfg.get("test_data") is None else list(cfg.test_data)
        )
        #: SSR's stages (``ssr``: stage1, stage2, optional no_depth_stage1), and per seed
        #: their runs: seed -> {"stage1" | "stage2" | "no_depth": the stage's row}.
        self.ssr: DictConfig | None = cfg.get("ssr") or None
        self.ssr_runs: dict[int, dict[str, dict[str, Any]]] = {}
        #: The trivial baselines of each seed (``constant``, ``bicubic``; kind BASELINE).
        self.baseline_rows: list[dict[str, Any]] = []
        self.baselines: set[int] = set()
        self.keep_weights = bool(self.sr or self.ssr or self.anchor or self.test_data is not None)
        self.start = time.perf_counter()

    def run(self) -> None:
        """Every selected model and seed: stage 1, then (an estimator, with ``sr``) stage 3."""
        only = list(self.cfg.get("only") or [])
        unknown = sorted(set(only) - set(self.cfg.models))
        if unknown:
            raise ValueError(f"only={unknown}: not in the preset's models {list(self.cfg.models)}")
        models = selected_models(self.cfg)
        if self.anchor and models[0] != self.anchor:
            raise ValueError(
                f"anchor={self.anchor}: the other models start from its weights, so it must "
                f"be the preset's first model and selected by only (models: {models})"
            )
        for model in models:
            for seed in self.cfg.seeds:
                row, job_cfg, metrics = self.stage1(model, int(seed))
                if self.sr and row["kind"] == ESTIMATOR:
                    self.stage3(row, job_cfg, metrics)

    def write(self) -> None:
        # After every run, so that an interrupted comparison keeps its results.
        elapsed = time.perf_counter() - self.start
        rows = self.rows + self.baseline_rows
        write_tables(rows, self.cfg, self.command, elapsed, self.out_dir)

    def _tail(self, seed: int) -> list[str]:
        return [f"seed={seed}", f"task_name=compare_{self.cfg.preset}"]

    def _net_overrides(self, prefix: str) -> list[str]:
        """The preset's SR network size as overrides of ``prefix`` (e.g. ``model.net``)."""
        assert self.sr is not None
        net = self.sr.get("net") or {}
        return [f"{prefix}.{k}={hydra_value(v)}" for k, v in net.items()]

    @staticmethod
    def _input_overrides(prefix: str, kind: str, kernel_channels: int | None) -> list[str]:
        """What RRDB-SFT at ``prefix`` takes besides the LR image, for a stage-2 ``kind``."""
        if kind == "kernels":
            return [f"{prefix}.seg_encoding=none", f"++{prefix}.kernel_channels={kernel_channels}"]
        return [f"{prefix}.seg_encoding=none"] if kind == "blur" else []

    def _add_row(
        self, label: str, seed: int, kind: str, info: dict[str, Any], metrics: dict[str, float]
    ) -> dict[str, Any]:
        """Append the row of a finished run (its :data:`METRICS`, NaN where not logged)."""
        row: dict[str, Any] = {"model": label, "seed": seed, "kind": kind, **info}
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
        trains = bool(job_cfg.get("train", True))
        weights = (
            Path(job_cfg.paths.output_dir) / WEIGHTS_FILE if self.keep_weights and trains else None
        )
        t0 = time.perf_counter()
        metrics = train(job_cfg, weights_path=weights)
        info["wall_s"] = round(time.perf_counter() - t0, 1)
        if weights is not None:
            info["weights"] = weights
            info["steps"] = _global_step(weights)
        return metrics, info

    def stage1(self, model: str, seed: int) -> tuple[dict[str, Any], DictConfig, dict[str, float]]:
        """Train and test ``model`` (an estimator's map metrics, a direct-SR model's SR
        metrics); append its row."""
        overrides = [
            *self.cfg.models[model],
            *self.cfg.overrides,
            *(self.cfg.get("extra") or []),
            *self._anchor_overrides(model, seed),
            *(["test=false"] if self.test_data is not None else []),
            *self._tail(seed),
        ]
        log.info("compare: %s seed %s", model, seed)
        job_cfg = compose_train_config(overrides, self.log_dir / model / f"seed{seed}")
        kind = model_kind(job_cfg)
        ssr = self._ssr_overrides(model, seed, job_cfg)
        if ssr:  # the seed's SSR stages, before the seed and task name
            tail = self._tail(seed)
            overrides = [*overrides[: -len(tail)], *ssr, *tail]
            job_cfg = compose_train_config(overrides, self.log_dir / model / f"seed{seed}")
            self._check_svkr_networks(model, seed, job_cfg)
        if kind == DIRECT_SR and model in self.blur_only:
            raise ValueError(
                f"{model} is a direct blind-SR model ({job_cfg.model._target_}): it has no "
                "stage 2 or 3, so remove it from sr.blur_only"
            )
        self._baseline_rows(seed, job_cfg)
        metrics, info = self._train(job_cfg, overrides, count_parameters=kind != SVKR_EVAL)
        if self.anchor:
            info["anchor_ckpt"] = OmegaConf.select(job_cfg, "model.anchor_ckpt")
            info["anchor_discriminator_ckpt"] = OmegaConf.select(
                job_cfg, "model.anchor_discriminator_ckpt", default=None
            )
            if model == self.anchor:
                self.anchor_weights[seed] = info["weights"]
        metrics.update(self._test_deployed(model, seed, job_cfg, info))
        if kind == SVKR_EVAL:
            row = self._svkr_rows(model, seed, job_cfg, info, metrics)
        else:
            row = self._add_row(model, seed, kind, info, metrics)
        log.info("compare: %s seed %s done in %.0f s", model, seed, info["wall_s"])
        self.write()
        return row, job_cfg, metrics

    def _baseline_rows(self, seed: int, job_cfg: DictConfig) -> None:
        """Once per seed, on the test data of its first run: the ``constant`` row (the
        training split's mean sigma or mean kernel) and the ``bicubic`` row, measured by
        the metric code the systems use (:func:`~svblur.experiments.baselines.baseline_scores`)."""
        if seed in self.baselines:
            return
        self.baselines.add(seed)
        data_cfg = job_cfg.data
        if self.test_data is not None:
            out = Path(job_cfg.paths.output_dir) / "baselines"
            data_cfg = compose_train_config([*self.test_data, *self._tail(seed)], out).data
        t0 = time.perf_counter()
        blur_norm = float(OmegaConf.select(job_cfg, "model.blur_norm", default=5.0))
        scores = measure_baselines(data_cfg, blur_norm)
        wall = round(time.perf_counter() - t0, 1)
        for name, metrics in scores.items():
            row: dict[str, Any] = {"model": name, "seed": seed, "kind": BASELINE, "params": 0}
            row.update(wall_s=wall, command=f"svblur.experiments.baselines ({name})")
            row.update({k: float(metrics.get(k, math.nan)) for k, _, _ in METRICS})
            self.baseline_rows.append(row)
        self.write()

    # ------------------------------------------------------------------ SSR
    def ssr_stages(self, seed: int) -> dict[str, dict[str, Any]]:
        """The seed's SSR stage runs (stage 1, stage 2, optionally a no-depth stage 1),
        trained on first use; rows of kind :data:`SSR_STAGE`, each with its ``weights``,
        its network config ``net`` and (stage 1) its depth estimator config ``depth``."""
        if seed in self.ssr_runs:
            return self.ssr_runs[seed]
        assert self.ssr is not None
        stages = [
            ("stage1", "ssr_stage1", self.ssr.stage1, KernelEstimationTask),
            ("stage2", "ssr_stage2_gt_kernels", self.ssr.stage2, KernelCodeSRTask),
        ]
        if self.ssr.get("no_depth_stage1"):
            stages.append(
                ("no_depth", "ssr_stage1_no_depth", self.ssr.no_depth_stage1, KernelEstimationTask)
            )
        runs: dict[str, dict[str, Any]] = {}
        for key, label, stage, system in stages:
            overrides = [
                *self.cfg.overrides,
                *stage,
                *(self.cfg.get("extra") or []),
                *self._tail(seed),
            ]
            log.info("compare: SSR %s seed %s", label, seed)
            job_cfg = compose_train_config(overrides, self.log_dir / label / f"seed{seed}")
            _require_system(job_cfg, system, f"ssr.{key}", system.__name__)
            metrics, info = self._train(job_cfg, overrides)
            net = OmegaConf.to_container(job_cfg.model.net, resolve=True)
            extra: dict[str, Any] = {"net": net}
            if system is KernelEstimationTask:
                kwargs = job_cfg.model.get("depth_kwargs")
                depth = {
                    "_target_": str(job_cfg.model.depth_estimator),
                    **(OmegaConf.to_container(kwargs, resolve=True) if kwargs else {}),
                }
                extra["depth"] = depth
                info["params"] += sum(
                    p.numel() for p in build_network(depth).parameters() if p.requires_grad
                )
            row = self._add_row(label, seed, SSR_STAGE, info, metrics)
            row.update(extra)
            runs[key] = row
            log.info("compare: SSR %s seed %s done in %.0f s", label, seed, info["wall_s"])
            self.write()
        self.ssr_runs[seed] = runs
        return runs

    def _ssr_overrides(self, model: str, seed: int, job_cfg: DictConfig) -> list[str]:
        """The seed's SSR checkpoints (and, for stage 3, networks) for an SVKR evaluation
        or a diffusion SR conditioned on SVKR; nothing for other models."""
        kind = _kind(job_cfg)
        svkr_stage3 = kind == "diffusion_sr" and (
            OmegaConf.select(job_cfg, "model.condition") == "svkr"
        )
        if kind != "kernel_regression" and not svkr_stage3:
            return []
        if not self.ssr:
            raise ValueError(
                f"{model} needs SSR's stage-1 and stage-2 checkpoints: give the preset an "
                "ssr section (ssr.stage1, ssr.stage2; see conf/compare/ssr_small.yaml)"
            )
        runs = self.ssr_stages(seed)
        s1, s2 = runs["stage1"], runs["stage2"]
        if kind == "kernel_regression":
            out = [
                f"model.stage1_ckpt={hydra_value(str(s1['weights']))}",
                f"model.stage2_ckpt={hydra_value(str(s2['weights']))}",
            ]
            if "no_depth" in runs:
                no_depth = hydra_value(str(runs["no_depth"]["weights"]))
                out.append(f"model.no_depth_stage1_ckpt={no_depth}")
            return out
        return [
            f"model.net.kernel_size={int(s1['net']['kernel_size'])}",
            f"model.kernel_estimator_ckpt={hydra_value(str(s1['weights']))}",
            f"model.sr_ckpt={hydra_value(str(s2['weights']))}",
            "~model.net.estimator.kernel_estimator",
            f"+model.net.estimator.kernel_estimator={hydra_value(s1['net'])}",
            "~model.net.estimator.depth_estimator",
            f"+model.net.estimator.depth_estimator={hydra_value(s1['depth'])}",
            "~model.net.estimator.sr_net",
            f"+model.net.estimator.sr_net={hydra_value(s2['net'])}",
            f"model.net.estimator.pca={int(s2['net']['kernel_channels'])}",
        ]

    def _check_svkr_networks(self, model: str, seed: int, job_cfg: DictConfig) -> None:
        """A stage 3 on SVKR must build the networks of the seed's stages 1 and 2."""
        estimator = OmegaConf.select(job_cfg, "model.net.estimator")
        if estimator is None or _kind(job_cfg) != "diffusion_sr":
            return
        runs = self.ssr_runs[seed]
        composed = OmegaConf.to_container(estimator, resolve=True)
        expected = {
            "kernel_estimator": runs["stage1"]["net"],
            "depth_estimator": runs["stage1"]["depth"],
            "sr_net": runs["stage2"]["net"],
        }
        for key, value in expected.items():
            if composed.get(key) != value:
                raise RuntimeError(
                    f"{model}: the composed model.net.estimator.{key} differs from the SSR "
                    "stage network it loads (an override value was not written back faithfully)"
                )

    def _svkr_rows(
        self,
        model: str,
        seed: int,
        job_cfg: DictConfig,
        info: dict[str, Any],
        metrics: dict[str, float],
    ) -> dict[str, Any]:
        """The SVKR evaluation as rows ``<model>_t1 .. _tT`` (depth estimated from the SR
        image of the step before) and ``<model>_no_depth`` (step T without depth); their
        params: DKENet, its depth network (not without depth) and RRDB-SFT."""
        runs = self.ssr_runs[seed]
        iterations = int(OmegaConf.select(job_cfg, "model.iterations"))
        names = ("kernels/l1", "sr/psnr_y", "sr/ssim_y")
        no_depth = runs.get("no_depth", runs["stage1"])
        depth_params = runs["stage1"]["params"] - _trainable_parameters_of(runs["stage1"]["net"])
        variants = [
            (f"{model}_t{t}", f"t{t}/", runs["stage1"]["params"]) for t in range(1, iterations + 1)
        ]
        variants.append((f"{model}_no_depth", f"no_depth/t{iterations}/", no_depth["params"]))
        row: dict[str, Any] = {}
        for label, prefix, params in variants:
            values = {f"test/{n}": metrics[f"test/{prefix}{n}"] for n in names}
            if prefix.startswith("no_depth/") and "no_depth" not in runs:
                params -= depth_params
            row = self._add_row(
                label,
                seed,
                SVKR_EVAL,
                {**info, "params": params + runs["stage2"]["params"]},
                values,
            )
        return row

    def _anchor_overrides(self, model: str, seed: int) -> list[str]:
        """Start ``model`` from the generator of the seed's anchor run (not the anchor) and,
        with ``anchor_discriminator``, its discriminators from that run's final checkpoint
        (``model.anchor_discriminator_ckpt``)."""
        if not self.anchor or model == self.anchor:
            return []
        overrides = [f"model.anchor_ckpt={hydra_value(str(self.anchors[seed]))}"]
        if self.anchor_discriminator:
            weights = hydra_value(str(self.anchor_weights[seed]))
            overrides.append(f"++model.anchor_discriminator_ckpt={weights}")
        return overrides

    def _test_deployed(
        self, model: str, seed: int, job_cfg: DictConfig, info: dict[str, Any]
    ) -> dict[str, float]:
        """With ``test_data``: test the run's final weights on the preset's test set. With
        an exported generator: its inference cost (:func:`inference_cost`); the anchor's
        export is kept for the seed's other models."""
        metrics: dict[str, float] = {}
        data_cfg = job_cfg.data
        if self.test_data is not None:
            out = Path(job_cfg.paths.output_dir) / "test"
            composed = compose_train_config([*self.test_data, *self._tail(seed)], out)
            data_cfg = OmegaConf.create(OmegaConf.to_container(composed.data, resolve=True))
            test_cfg = copy.deepcopy(job_cfg)
            with open_dict(test_cfg):
                test_cfg.data = data_cfg
                test_cfg.ckpt_path = str(info["weights"])
                test_cfg.report_dir = str(out)
            t0 = time.perf_counter()
            metrics.update(evaluate(test_cfg))
            info["test_wall_s"] = round(time.perf_counter() - t0, 1)
        export = OmegaConf.select(job_cfg, "model.export_path", default=None)
        if export and Path(export).is_file():
            metrics.update(
                inference_cost(job_cfg.model.net, Path(export), _first_test_images(data_cfg))
            )
            if model == self.anchor:
                self.anchors[seed] = Path(export)
        if model == self.anchor and seed not in self.anchors:
            raise ValueError(
                f"anchor={model} exported no generator (model.export_path={export}); the "
                "other models start from it, so give the anchor a GANSRTask-like model"
            )
        return metrics

    def stage2_for(
        self, seed: int, kind: str, kernel_channels: int | None = None
    ) -> dict[str, Any]:
        """The seed's stage-2 row of ``kind`` (``seg``, ``blur`` or ``kernels``, the latter
        with ``kernel_channels`` taps), trained on first use."""
        if (seed, kind) in self.stage2:
            return self.stage2[(seed, kind)]
        assert self.sr is not None
        label = STAGE2_LABELS[kind]
        overrides = [
            *self.cfg.overrides,
            *self.sr.stage2,
            *self._net_overrides("model.net"),
            *(self.cfg.get("extra") or []),
            *self._input_overrides("model.net", kind, kernel_channels),
            *self._tail(seed),
        ]
        log.info("compare: stage 2 (%s) seed %s", label, seed)
        job_cfg = compose_train_config(overrides, self.log_dir / label / f"seed{seed}")
        _require_system(job_cfg, NonBlindSRTask, "sr.stage2", "model=rrdb_sft")
        metrics, info = self._train(job_cfg, overrides)
        row = self._add_row(label, seed, STAGE2, info, metrics)
        self.stage2[(seed, kind)] = row
        log.info("compare: stage 2 (%s) seed %s done in %.0f s", label, seed, info["wall_s"])
        self.write()
        return row

    def _stage2_kind(
        self, model: str, stage1_cfg: DictConfig, metrics: dict[str, float]
    ) -> tuple[str, int | None]:
        """What the SR network of ``model``'s stage 3 takes: ``(kind, kernel_channels)``.

        A kernel estimator (it logged ``test/kernels/l1``) feeds an RRDB-SFT conditioned on
        ``k*k`` kernel taps, ``k`` the data's ``degradation.blur.kernel_size``; the others
        feed blur + semantic maps, or the blur map only (``sr.blur_only``).
        """
        if "test/kernels/l1" in metrics:
            if model in self.blur_only:
                raise ValueError(
                    f"{model} estimates kernels (it logged test/kernels/l1): its blind SR "
                    "takes the kernel field, so remove it from sr.blur_only"
                )
            size = OmegaConf.select(stage1_cfg, "degradation.blur.kernel_size")
            if size is None:
                raise ValueError(
                    f"{model} estimates kernels but the data's degradation has no "
                    "blur.kernel_size; use a kernel-field degradation (degradation=motion_sv "
                    "or gaussian_sv)"
                )
            return "kernels", int(size) ** 2
        kind = "blur" if model in self.blur_only else "seg"
        if kind == "seg" and "test/seg/miou" not in metrics:
            raise ValueError(
                f"{model} predicts no semantic map (it logged no test/seg/miou), so its "
                f"blind SR needs the blur-only RRDB-SFT: add {model} to sr.blur_only"
            )
        return kind, None

    def stage3(
        self, row: dict[str, Any], stage1_cfg: DictConfig, metrics: dict[str, float]
    ) -> None:
        """Fine-tune RRDB-SFT on the frozen estimates of ``row``'s model; test; fill the row."""
        assert self.sr is not None
        model, seed = row["model"], row["seed"]
        kind, kernel_channels = self._stage2_kind(model, stage1_cfg, metrics)
        stage2 = self.stage2_for(seed, kind, kernel_channels)
        row["sr_stage2"] = stage2["model"]  # known before stage 3 ends (for the tables)
        estimator = OmegaConf.to_container(stage1_cfg.model.net, resolve=True)
        overrides = [
            *self.cfg.overrides,
            *self.sr.stage3,
            *self._net_overrides("model.net.sr"),
            *(self.cfg.get("extra") or []),
            # the stage-1 network, as configured for that run
            "~model.net.estimator",
            f"+model.net.estimator={hydra_value(estimator)}",
            *self._input_overrides("model.net.sr", kind, kernel_channels),
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
