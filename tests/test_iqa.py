"""pyiqa's metrics (SSR Tab. 1) from local files only: a missing file skips its metric
with one line naming it, nothing is downloaded, and a present file gives pyiqa's value."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pyiqa")
scipy_io = pytest.importorskip("scipy.io")

from svblur.metrics.iqa import IQAMean, local_iqa_metrics  # noqa: E402

NIQE_FILE = "niqe_modelparameters.mat"


def niqe_statistics(folder: Path, seed: int = 0) -> Path:
    """A NIQE parameter file in the release's layout (``mu_prisparam`` 1 x 36,
    ``cov_prisparam`` 36 x 36), with made-up but valid statistics."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(200, 36))
    path = folder / NIQE_FILE
    scipy_io.savemat(
        path,
        {"mu_prisparam": features.mean(0, keepdims=True), "cov_prisparam": np.cov(features.T)},
    )
    return path


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a metric tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_missing_weight_files_skip_their_metric_and_name_the_file(tmp_path, caplog, monkeypatch):
    _no_network(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="svblur.metrics.iqa"):
        metrics = local_iqa_metrics(["lpips", "musiq", "niqe", "clipiqa"], tmp_path)
    assert metrics == {}
    lines = [r.getMessage() for r in caplog.records if r.name == "svblur.metrics.iqa"]
    expected = {
        "lpips": tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth",
        "musiq": tmp_path / "musiq_koniq_ckpt-e95806b9.pth",
        "niqe": tmp_path / NIQE_FILE,
        "clipiqa": tmp_path / "RN50.pt",
    }
    assert len(lines) == 4
    for line, (name, path) in zip(lines, expected.items()):
        assert line.startswith(f"IQA metric {name} skipped: weight file {path} not found")
        assert "\n" not in line
    assert not any(tmp_path.rglob("*.pth")) and not any(tmp_path.rglob("*.pt"))


def test_niqe_from_a_local_file_is_pyiqas_niqe(tmp_path, monkeypatch):
    NIQE = pytest.importorskip("pyiqa.archs.niqe_arch").NIQE

    _no_network(monkeypatch)
    path = niqe_statistics(tmp_path)
    metric = local_iqa_metrics(["niqe"], tmp_path)["niqe"]
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 204, 204, generator=g), 5, 1)
    mean = IQAMean("niqe", metric, crop_border=4)
    assert mean.lower_is_better
    scores = mean.scores(smooth, smooth)
    reference = NIQE(pretrained_model_path=str(path))(smooth[..., 4:-4, 4:-4])
    torch.testing.assert_close(scores, reference.reshape(-1).float())
    mean.update(smooth, smooth)
    assert float(mean.compute()) == pytest.approx(float(reference.mean()), rel=1e-6)
    # other statistics, another value: the file is what is read
    (tmp_path / "other").mkdir()
    niqe_statistics(tmp_path / "other", seed=1)
    again = local_iqa_metrics(["niqe"], tmp_path / "other")["niqe"]
    assert not torch.allclose(IQAMean("niqe", again).scores(smooth, smooth), scores)


def test_unknown_metric_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown IQA metrics"):
        local_iqa_metrics(["no_such_metric"], tmp_path)


def test_images_too_small_for_niqe_are_left_out_with_one_warning(tmp_path, caplog):
    niqe_statistics(tmp_path)
    mean = IQAMean("niqe", local_iqa_metrics(["niqe"], tmp_path)["niqe"], crop_border=4)
    small = torch.rand(2, 3, 64, 64)
    with caplog.at_level(logging.WARNING, logger="svblur.metrics.iqa"):
        assert torch.isnan(mean.scores(small, small)).all()
        mean.update(small, small)
    assert int(mean.count) == 0
    assert [r.getMessage() for r in caplog.records if r.name == "svblur.metrics.iqa"] == [
        "IQA metric niqe needs images of at least 96 x 96 pixels after the 4-pixel crop, "
        "got 56 x 56: not measured"
    ]
