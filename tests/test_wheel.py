"""svblur installed as a regular wheel, used from a folder that is not this repository.

The wheel is built from the repository and installed with ``pip install --no-deps
--target`` (the test environment provides the dependencies); every command runs with that
folder first on ``PYTHONPATH`` and a temporary working folder, so nothing is read from the
clone. The README's "Use svblur in your own project" example runs as written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "data.hr_size=[64,80]",
    "data.train_size=8",
    "data.val_size=4",
    "data.test_size=4",
    "data.batch_size=2",
    "model.net.window_size=[4,5]",
    "extras.print_config=false",
]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding svblur installed from a freshly built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    dist, site = root / "dist", root / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        cwd=root,
    )
    (wheel,) = dist.glob("svblur-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        cwd=root,
    )
    return site


def run(site: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=str(site),
        WANDB_MODE="offline",
        OMP_NUM_THREADS="1",
        HYDRA_FULL_ERROR="1",
    )
    program = command[0]
    if program.startswith("svblur-"):
        command = (str(site / "bin" / program), *command[1:])
    result = subprocess.run(
        list(command), capture_output=True, text=True, timeout=600, cwd=cwd, env=env
    )
    assert result.returncode == 0, (
        f"{program} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


def test_the_wheel_ships_the_configs_and_is_what_runs(installed, tmp_path):
    configs = sorted(p.relative_to(installed / "svblur" / "conf").as_posix()
                     for p in (installed / "svblur" / "conf").rglob("*.yaml"))  # fmt: skip
    shipped = sorted(p.relative_to(REPO / "src" / "svblur" / "conf").as_posix()
                     for p in (REPO / "src" / "svblur" / "conf").rglob("*.yaml"))  # fmt: skip
    assert configs == shipped and "train.yaml" in configs and "model/cmos.yaml" in configs
    result = run(installed, tmp_path, sys.executable, "-c", "import svblur; print(svblur.__file__)")
    assert Path(result.stdout.strip()).is_relative_to(installed)


def test_installed_commands_train_and_evaluate_outside_the_repository(installed, tmp_path):
    result = run(installed, tmp_path, "svblur-train", "debug=fdr", *TINY)
    assert re.search(r"test/blur/psnr\s*│\s*[0-9.]+", result.stdout), result.stdout[-2000:]

    run(
        installed,
        tmp_path,
        "svblur-train",
        "++trainer.max_steps=1",
        "trainer.max_epochs=1",
        "test=false",
        *TINY,
    )
    (ckpt,) = (tmp_path / "logs" / "train" / "runs").glob("*/checkpoints/last.ckpt")
    result = run(installed, tmp_path, "svblur-eval", f"ckpt_path={ckpt}", *TINY)
    (metrics,) = (tmp_path / "logs" / "eval" / "runs").glob("*/metrics.csv")
    header, row = metrics.read_text().splitlines()
    assert "blur/psnr" in header.split(",") and row.startswith("test,")


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_the_readme_example_of_using_svblur_in_your_own_project_runs(installed, tmp_path):
    section = readme_section("Use svblur in your own project")
    # a line naming a file (`path`:) before a code block means "write this block there"
    blocks = re.findall(r"(?:^`([^`\n]+)`:\n\n)?```(\w+)\n(.*?)```", section, re.S | re.M)
    files = {name: body for name, _, body in blocks if name}
    assert set(files) == {"my_nets.py", "my_conf/model/tiny_blur.yaml"}
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    (snippet,) = [body for name, lang, body in blocks if lang == "python" and not name]
    run(installed, tmp_path, sys.executable, "-c", snippet)
    (commands,) = [body for name, lang, body in blocks if lang == "bash"]
    for line in commands.strip().splitlines():
        result = run(installed, tmp_path, *line.split("#")[0].split())
        assert "TinyBlurNet" in result.stdout + result.stderr  # the model summary names it
        assert re.search(r"test/blur/psnr\s*│\s*[0-9.]+", result.stdout), result.stdout[-2000:]
