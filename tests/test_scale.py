"""Scaling features on CPU: DDP, mixed precision, NaN guard, sweeps, W&B resume, fault resume."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch import nn

from svblur.cli.eval import evaluate
from svblur.cli.train import train
from svblur.data import DefocusDataModule
from svblur.systems import BlurSemanticsTask

from .conftest import TINY

REPO = Path(__file__).resolve().parents[1]
CLI_TINY = [o for o in TINY if not o.startswith("trainer.")] + ["trainer.log_every_n_steps=1"]


def run_cli(args: list[str], tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``svblur-train`` in a subprocess, logs under ``tmp_path/logs``."""
    exe = Path(sys.executable).with_name("svblur-train")
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        OMP_NUM_THREADS="1",
    )
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    result = subprocess.run(
        [str(exe), *flags, *CLI_TINY, f"paths.log_dir={tmp_path / 'logs'}", *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"svblur-train failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


def read_csv_metrics(run_dir: Path) -> list[dict[str, str]]:
    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


def last_value(rows: list[dict[str, str]], key: str) -> float:
    return [float(r[key]) for r in rows if r.get(key)][-1]


# ---------------------------------------------------------------------------- DDP


def test_ddp_cpu_two_processes_train_validate_test_like_one(make_cfg, tmp_path):
    """2-process gloo DDP: one output folder, one best checkpoint, test metrics over each
    image exactly once (5 test images over 2 ranks) equal to a 1-process evaluation."""
    run_cli(
        ["trainer=ddp_cpu", "trainer.max_epochs=1", "data.val_size=5", "data.test_size=5"],
        tmp_path,
    )
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    ckpts = sorted(p.name for p in (runs[0] / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["epoch_000.ckpt", "last.ckpt"]
    rows = read_csv_metrics(runs[0])
    ddp = {k: last_value(rows, k) for k in ("test/blur/psnr", "test/blur/ssim", "test/seg/miou")}
    # Rank 0 and rank 1 each trained on 4 of the 8 training images.
    steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert max(steps) + 1 == 2  # 8 images / (2 ranks x batch 2)

    cfg = make_cfg(
        "eval", [f"ckpt_path={runs[0] / 'checkpoints' / 'epoch_000.ckpt'}", "data.test_size=5"]
    )
    single = evaluate(cfg)
    for key, value in ddp.items():
        assert single[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


# ------------------------------------------------------------ precision and NaN guard


def test_bf16_mixed_run_trains(make_cfg):
    cfg = make_cfg(
        "train",
        ["trainer.precision=bf16-mixed", "trainer.max_epochs=2", "callbacks=none", "test=false"],
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(list(metrics.values()))).all()
    assert metrics["train/skipped_steps"] == 0
    # the same seeded run in full precision: a different, but close, training loss
    cfg = make_cfg("train", ["trainer.max_epochs=2", "callbacks=none", "test=false"])
    full = train(cfg)
    assert metrics["train/loss_epoch"] != full["train/loss_epoch"]
    assert metrics["train/loss_epoch"] == pytest.approx(full["train/loss_epoch"], rel=0.05)


class _TinyNet(nn.Module):
    """A small blur + seg net that can be told to produce NaN on chosen calls."""

    def __init__(self, num_classes: int, scale: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blur = nn.Conv2d(8, 1, 1)
        self.seg = nn.Conv2d(8, num_classes, 1)
        self.up = nn.Upsample(scale_factor=scale, mode="bilinear")
        self.poison_calls: set[int] = set()
        self.calls = 0

    def forward(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.body(lr)
        if self.training:
            if self.calls in self.poison_calls:
                x = x * float("nan")
            self.calls += 1
        return {"blur": self.up(self.blur(x)), "seg": self.up(self.seg(x))}


def test_non_finite_step_is_skipped_and_counted(tmp_path):
    L.seed_everything(0)
    data = DefocusDataModule(
        train_size=8, val_size=2, test_size=2, hr_size=(32, 40), batch_size=2, augment=False
    )
    net = _TinyNet(num_classes=8)
    net.poison_calls = {1}
    task = BlurSemanticsTask(
        net, num_classes=8, optimizer=lambda params: torch.optim.Adam(params, lr=1e-2), log_images=0
    )
    snapshots: list[dict[str, torch.Tensor]] = []

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            snapshots.append({k: v.clone() for k, v in pl_module.net.state_dict().items()})

    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[Snapshot()],
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=data)
    assert task.skipped_steps == 1
    assert len(snapshots) == 4
    weights = [k for k in snapshots[0] if "running" not in k and "num_batches" not in k]
    # Step 1 (NaN) left the weights as step 0 left them; steps 2 and 3 moved them again.
    for key in weights:
        assert torch.equal(snapshots[1][key], snapshots[0][key]), key
    assert all(torch.isfinite(v).all() for v in snapshots[-1].values())
    assert any(not torch.equal(snapshots[3][k], snapshots[1][k]) for k in weights)
    assert trainer.global_step == 4  # skipped steps still advance the step count


# ------------------------------------------------------------------------- sweeps


def test_multirun_gives_each_job_its_own_folder_and_wandb_run(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        [
            "-m",
            "model.optimizer.lr=1e-4,3e-4",
            "logger=wandb",
            "trainer.max_epochs=1",
            "callbacks=none",
            "test=false",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    ids = set()
    for job, lr in zip(jobs, (1e-4, 3e-4), strict=True):
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert cfg["model"]["optimizer"]["lr"] == lr
        (run,) = list((job / "wandb").glob("offline-run-*"))
        ids.add(run.name.rsplit("-", 1)[-1])
        assert list(run.glob("*.wandb"))
    assert len(ids) == 2


def test_optuna_search_runs_two_trials_on_the_named_metric(tmp_path):
    sweep = tmp_path / "optuna"
    run_cli(
        [
            "-m",
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=1",
            "optimized_metric=val/blur/psnr",
            "trainer.max_epochs=1",
            "callbacks=none",
            "test=false",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert "model.optimizer.lr" in results["best_params"]
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]
    assert len(jobs) == 2
    # the search maximizes the last val/blur/psnr of each trial
    finals = [last_value(read_csv_metrics(job), "val/blur/psnr") for job in jobs]
    assert results["best_value"] == pytest.approx(max(finals), rel=1e-6)


# ----------------------------------------------------------------- W&B and resume


def test_resume_continues_the_same_wandb_run(make_cfg):
    first = make_cfg("train", ["logger=wandb", "trainer.max_epochs=1", "test=false"])
    train(first)
    out = Path(first.paths.output_dir)
    ckpt = out / "checkpoints" / "last.ckpt"
    run_id = torch.load(ckpt, weights_only=True)["wandb_run_id"]
    (run,) = list((out / "wandb").glob("offline-run-*"))
    assert run.name.endswith(run_id)

    second = make_cfg(
        "train", ["logger=wandb", "trainer.max_epochs=2", "test=false", f"ckpt_path={ckpt}"]
    )
    train(second)
    runs = sorted((Path(second.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert {r.name.rsplit("-", 1)[-1] for r in runs} == {run_id}
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


def _records(path: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_killed_run_resumes_with_same_steps_lr_and_data_order(tmp_path):
    common = [
        "trainer.max_epochs=2",
        "data.train_size=12",  # 6 steps per epoch
        "callbacks=default",
        "callbacks.step_checkpoint.every_n_train_steps=2",
        "callbacks.early_stopping=null",
        "callbacks.rich_progress_bar=null",
        "test=false",
        "model.scheduler.warmup_epochs=1",
    ]
    # Uninterrupted reference.
    ref = tmp_path / "ref"
    ref.mkdir()
    run_cli(
        [
            *common,
            "+callbacks.record._target_=tests.helpers.RecordBatches",
            f"+callbacks.record.path={ref / 'batches.jsonl'}",
        ],
        ref,
    )
    expected = _records(ref / "batches.jsonl")
    assert sorted(expected) == list(range(12))

    # Killed (SIGKILL) after step 9, i.e. mid-epoch 2; last.ckpt was written at step 8.
    job = tmp_path / "job"
    job.mkdir()
    record = [
        "+callbacks.record._target_=tests.helpers.RecordBatches",
        f"+callbacks.record.path={job / 'batches.jsonl'}",
    ]
    killed = run_cli(
        [
            *common,
            *record,
            "+callbacks.kill._target_=tests.helpers.KillAtStep",
            "+callbacks.kill.step=9",
        ],
        job,
        check=False,
    )
    assert killed.returncode != 0
    (run,) = list((job / "logs" / "train" / "runs").iterdir())
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8

    (job / "batches.jsonl").unlink()
    run_cli([*common, *record, "ckpt_path=last"], job)
    resumed = _records(job / "batches.jsonl")
    assert sorted(resumed) == [8, 9, 10, 11]
    for step, rec in resumed.items():
        assert rec["epoch"] == expected[step]["epoch"]
        assert rec["lr"] == pytest.approx(expected[step]["lr"], rel=1e-6)
        assert rec["fingerprint"] == pytest.approx(expected[step]["fingerprint"], rel=1e-6)
