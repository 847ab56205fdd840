"""Every ``svblur-*`` command answers bad input with one line naming the file, and a
non-zero exit status; tracebacks only on request (``HYDRA_FULL_ERROR=1`` / ``--debug``).

Bad inputs: a missing file, a truncated file, a file that is not a checkpoint, a
checkpoint of another model, and an unreadable image among good ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svblur.checkpoints import CheckpointError, read_checkpoint
from svblur.cli._common import exit_on_input_error
from svblur.cli.convert import main as convert_main
from svblur.cli.eval import evaluate
from svblur.cli.predict import predict
from svblur.cli.train import train
from svblur.models import MANet

from .test_bsr_readers import make_bsr_tree
from .test_predict import _predict_cfg, tiny_blind_sr

BAD_KINDS = ("missing", "truncated", "not_a_checkpoint", "other_model")


def make_bad_file(kind: str, folder: Path, lightning: bool = True) -> Path:
    """A bad checkpoint of ``kind``; ``other_model`` is a MANet checkpoint (Lightning's
    layout when ``lightning``, else a plain state dict)."""
    path = folder / f"{kind}.ckpt"
    if kind == "truncated":
        torch.save({"state_dict": {"net.w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:500])
    elif kind == "not_a_checkpoint":
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, format="PNG")
    elif kind == "other_model":
        state = MANet(channels=(8, 8, 8)).state_dict()
        if lightning:
            state = {
                "state_dict": {f"net.{k}": v for k, v in state.items()},
                "optimizer_states": [],
                "global_step": 1,
            }
        torch.save(state, path)
    return path


EXPECTED = {
    "missing": "no such file|no checkpoint file",
    "truncated": "cannot be read as a PyTorch checkpoint",
    "not_a_checkpoint": "cannot be read as a PyTorch checkpoint",
    "other_model": "does not fit|no released CMOS",
}


def one_line_error(capsys: pytest.CaptureFixture, prog: str, path: Path, kind: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, err
    assert str(path) in lines[0] or path.name in lines[0], lines[0]
    assert re.search(EXPECTED[kind], lines[0]), lines[0]
    assert "Traceback" not in err and "weights_only=False" not in err
    return lines[0]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_train_and_eval_answer_a_bad_checkpoint_in_one_line(make_cfg, tmp_path, capsys, kind):
    bad = make_bad_file(kind, tmp_path)
    for prog, run, name in (
        ("svblur-train", train, "train"),
        ("svblur-eval", evaluate, "eval"),
    ):
        cfg = make_cfg(name, [f"ckpt_path={bad}"])
        with pytest.raises(SystemExit) as exit_info:
            exit_on_input_error(prog, debug=False)(run)(cfg)
        assert exit_info.value.code == 2
        one_line_error(capsys, prog, bad, kind)


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_predict_answers_a_bad_checkpoint_in_one_line(tmp_path, capsys, kind):
    bad = make_bad_file(kind, tmp_path, lightning=False)
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    cfg = _predict_cfg(tmp_path, [f"ckpt={bad}", f"input={image}", f"output={tmp_path / 'o'}"])
    with pytest.raises(SystemExit) as exit_info:
        exit_on_input_error("svblur-predict", debug=False)(predict)(cfg)
    assert exit_info.value.code == 2
    one_line_error(capsys, "svblur-predict", bad, kind)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_convert_answers_a_bad_file_in_one_line(tmp_path, capsys, kind):
    bad = make_bad_file(kind, tmp_path, lightning=False)
    out = tmp_path / "out.pth"
    with pytest.raises(SystemExit) as exit_info:
        convert_main([str(bad), str(out)])
    assert exit_info.value.code == 2
    one_line_error(capsys, "svblur-convert", bad, kind)
    assert not out.exists()
    with pytest.raises(CheckpointError if kind != "other_model" else ValueError):
        convert_main([str(bad), str(out), "--debug"])


def test_a_safe_load_refusal_is_not_advice_to_load_unsafely(tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"weights": np.ones(3)}, path)  # numpy arrays need an unsafe load (a global)
    with pytest.raises(CheckpointError, match="weights_only=True and does not load it") as info:
        read_checkpoint(path)
    assert "weights_only=False" not in str(info.value)


# ------------------------------------------------------- the console scripts themselves


def run_command(prog: str, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(prog)
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "WANDB_MODE": "offline", **env},
    )


def test_console_scripts_report_bad_input_in_one_line_and_fail(tmp_path):
    missing = tmp_path / "missing.ckpt"
    truncated = make_bad_file("truncated", tmp_path)
    cases = [
        ("svblur-train", [f"ckpt_path={missing}", "logger=csv"], missing, 2),
        ("svblur-eval", [f"ckpt_path={truncated}"], truncated, 2),
        ("svblur-predict", [f"ckpt={missing}", f"input={tmp_path}", "output=o"], missing, 2),
        ("svblur-convert", [str(truncated), str(tmp_path / "x.pth")], truncated, 2),
        ("svblur-compare", ["preset=no_such_preset"], Path("no_such_preset"), 2),
        (
            "svblur-make-dataset",
            ["nyuv2", "--source", str(missing), "--class-map", str(missing), "--out", "o"],
            missing,
            1,
        ),
        ("svblur-check-data", [str(tmp_path / "no_root")], tmp_path / "no_root", 1),
    ]
    for prog, args, named, status in cases:
        result = run_command(prog, args, tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == status, (prog, output[-2000:])
        assert "Traceback" not in output, (prog, output[-2000:])
        errors = [line for line in result.stderr.splitlines() if line.startswith(prog)]
        assert len(errors) == 1 and named.name in errors[0], (prog, result.stderr[-2000:])

    # tracebacks on request
    result = run_command("svblur-eval", [f"ckpt_path={truncated}"], tmp_path, HYDRA_FULL_ERROR="1")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_predict_skips_an_unreadable_image_among_good_ones(tmp_path):
    net = tiny_blind_sr(num_classes=3)
    ckpt = tmp_path / "blind.pth"
    torch.save(net.state_dict(), ckpt)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((9, 11, 3), 128, np.uint8)).save(photos / name)
    (photos / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    from .conftest import TINY_BLIND_NET

    result = run_command(
        "svblur-predict",
        [f"ckpt={ckpt}", f"input={photos}", "output=out", *TINY_BLIND_NET],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*_sr.png")) == ["a_sr.png", "b_sr.png"]
    skipped = [line for line in (result.stdout + result.stderr).splitlines() if "c.png" in line]
    assert any("skipping c.png" in line for line in skipped), result.stdout + result.stderr


def test_check_data_names_an_unreadable_image_among_good_ones(tmp_path):
    root = tmp_path / "nyu"
    make_bsr_tree(root, "nyuv2", n_train=3, n_test=1)
    bad = root / "train/GT/0001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    result = run_command("svblur-check-data", [str(root)], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(bad) in result.stderr
