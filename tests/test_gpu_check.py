"""``benchmarks/gpu_check.py``: its CPU rehearsal (``--dry-run``) runs every check end to end.

The CUDA run itself needs a GPU; these tests run the same plan with tiny sizes on the CPU
and check the report (table, JSON, exit status), the time-budget guard and the parsers.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"

#: Every row of the report: key -> (check name, a word of its setting).
EXPECTED = {
    "forward-fp32": ("CMOS forward", "fp32"),
    "forward-bf16": ("CMOS forward", "bf16-mixed"),
    "forward-compiled": ("CMOS forward", "channels_last + compile"),
    "train-fp32": ("CMOS training", "fp32"),
    "train-bf16": ("CMOS training", "bf16-mixed"),
    "train-compiled": ("CMOS training", "channels_last + compile"),
    "fdr-gpu": ("svblur-train", "trainer=gpu"),
    "fdr-ddp": ("svblur-train", "trainer=ddp trainer.devices=1"),
    "defocus": ("render_defocus", "scene"),
    "predict-4k": ("svblur-predict", "x4"),
}
ROW_KEYS = {
    "key",
    "check",
    "setting",
    "result",
    "status",
    "reason",
    "time_s",
    "peak_mb",
    "peak_kind",
    "metrics",
}


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _table(stdout: str) -> list[list[str]]:
    """Cells of the markdown table's body rows."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| check | setting | result | time (s) | peak memory | status |")
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


# about 85 s on 2 cores: `make test-slow` (the parsers and the budget check stay in make test)
@pytest.mark.slow
def test_dry_run_runs_every_check(tmp_path: Path) -> None:
    report = tmp_path / "rows.json"
    done = _run(["--dry-run", "--json", str(report)], tmp_path, timeout=1000)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]

    table = _table(done.stdout)
    assert len(table) == len(EXPECTED)
    for cells, (name, setting) in zip(table, EXPECTED.values()):
        assert cells[0] == name and setting in cells[1]
        assert cells[5] == "ok", cells
        assert float(cells[3]) > 0
    assert "10 of 10 checks ok" in done.stdout

    data = json.loads(report.read_text())
    assert data["dry_run"] is True and data["total_s"] > 0
    rows = {row["key"]: row for row in data["rows"]}
    assert list(rows) == list(EXPECTED)
    for key, row in rows.items():
        assert set(row) == ROW_KEYS and row["status"] == "ok" and row["reason"] is None
        assert row["check"] == EXPECTED[key][0]
        assert math.isfinite(row["time_s"]) and row["time_s"] > 0
        assert row["metrics"], key
        for name, value in row["metrics"].items():
            assert isinstance(value, (int, float)) and math.isfinite(value), (key, name)
    for key in ("forward-fp32", "train-bf16", "train-compiled"):
        metrics = rows[key]["metrics"]
        assert metrics["images_per_s"] > 0 and metrics["batch"] == 2 and metrics["steps"] == 2
        assert metrics["images_per_s"] == pytest.approx(2000 / metrics["median_ms"])
    for key in ("fdr-gpu", "fdr-ddp"):
        assert rows[key]["metrics"]["test_metrics"] >= 5
        # the CLI's process memory is measured (RSS on the CPU)
        assert rows[key]["peak_kind"] == "rss" and rows[key]["peak_mb"] > 100
    assert rows["defocus"]["metrics"]["max_abs_diff"] == 0.0
    assert rows["defocus"]["metrics"]["sigma_max_abs_diff"] == 0.0
    predict = rows["predict-4k"]["metrics"]
    assert (predict["output_width"], predict["output_height"]) == (160, 96)
    assert predict["tiles"] == 2 * 3  # 24x40 LR in 16-pixel tiles overlapping by 4
    assert list(tmp_path.iterdir()) == [report]  # nothing else written where it ran


def test_overrunning_the_budget_fails_the_check_and_the_exit_status(tmp_path: Path) -> None:
    # Compiling CMOS takes far longer than 6 s: the worker is stopped at the deadline.
    args = ["--dry-run", "--budget", "6", "--checks", "forward-compiled", "train-compiled"]
    done = _run(args, tmp_path, timeout=120)
    assert done.returncode == 1
    table = {cells[0]: cells for cells in _table(done.stdout)}
    assert table["CMOS forward"][5].startswith("FAILED: stopped after")
    assert table["CMOS training"][5] == "FAILED: not run: the total budget of 6 s is spent"
    assert "0 of 2 checks ok" in done.stdout


def test_parsers_and_table() -> None:
    gpu_check = _script()
    stdout = (
        "│  test/blur/boundary_mae   │    0.9104985594749451     │\n"
        "│      test/blur/psnr       │    14.041805267333984     │\n"
        "│       test/seg/miou       │           nan             │\n"
        "Epoch 0/0 ━━━━ 1/1 val/loss: 26.248 val/blur/psnr: 11.202\n"
    )
    metrics = gpu_check.parse_test_metrics(stdout)
    assert metrics["test/blur/psnr"] == pytest.approx(14.041805267333984)
    assert sorted(metrics) == ["test/blur/boundary_mae", "test/blur/psnr", "test/seg/miou"]
    assert math.isnan(metrics["test/seg/miou"])

    stderr = (
        "Traceback (most recent call last):\n"
        "ImportError: cannot import name 'load_weights' from 'svblur.models.convert'\n"
        "\nThe above exception was the direct cause of the following exception:\n\n"
        "hydra.errors.InstantiationException: Error locating target 'svblur.models.X'\n"
        "full_key: model\n"
    )
    assert gpu_check._last_error(stderr) == (
        "ImportError: cannot import name 'load_weights' from 'svblur.models.convert' "
        "(raised as hydra.errors.InstantiationException)"
    )

    plan = gpu_check.make_plan(dry_run=True)
    check = gpu_check.CHECKS["defocus"]
    ok = gpu_check.make_row(check, plan, 1.5, gpu_check.Outcome("max diff 0", {"x": 1.0}, 12.0))
    failed = gpu_check.make_row(check, plan, 2.0, reason="RuntimeError: a | b\nsecond line")
    table = gpu_check.format_table([ok, failed]).splitlines()
    assert table[2].endswith("| max diff 0 | 1.5 | 12 MiB | ok |")
    assert table[3].endswith("| - | 2.0 | - | FAILED: RuntimeError: a / b second line |")
    assert failed["status"] == "FAILED" and ok["status"] == "ok"
