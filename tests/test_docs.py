"""Documentation that is executed, not trusted: every ``svblur-*`` command in README.md, in
the pages of ``docs/`` and in the command-line modules' docstrings must compose, and the
site (``make docs``) must build with every link, anchor and API reference resolved.

Hydra commands (train, eval, predict) are composed with Hydra's compose API, so a renamed
config group or key fails here; the argparse commands are parsed by their own parsers; a
comparison preset is loaded with its arguments. Commands that need data or checkpoints
only need to compose (nothing runs).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from torch import nn
from torch.utils.data import DataLoader

import svblur.cli
from svblur.checkpoints import RECORD_KEY, SYSTEM_KINDS
from svblur.cli import check_data, convert, make_dataset
from svblur.conf import config_dir
from svblur.experiments import load_preset

REPO = Path(__file__).resolve().parents[1]
# README.md and the pages of the site (docs/api/ holds only API directives)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
HYDRA_APPS = {
    "svblur-train": "train",
    "svblur-eval": "eval",
    "svblur-predict": "predict",
    "svblur-degrade": "degrade",
    "svblur-export": "export",
}
ARGPARSE_APPS = {
    "svblur-convert": convert._parser,
    "svblur-make-dataset": make_dataset._parser,
    "svblur-check-data": check_data._parser,
}
COMMAND = re.compile(r"^svblur-[a-z-]+(?:\s|$)")


def _commands_in_text(text: str, where: str, fenced: bool = True) -> list[tuple[str, str]]:
    """``(where, command)`` for every command line in code blocks and inline code spans
    (``fenced=False``: every line counts as code, as in a docstring)."""
    found = []
    in_block = not fenced
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if fenced and line.strip().startswith("```"):
            in_block = not in_block
        elif in_block and COMMAND.match(line.strip()):
            command = line.strip()
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            found.append((f"{where}:{i + 1}", command.split(" #")[0].strip()))
        elif not in_block:
            for span in re.findall(r"`([^`]+)`", line):
                if COMMAND.match(span) and " " in span:
                    found.append((f"{where}:{i + 1}", span.strip()))
        i += 1
    return found


def _docstring_commands() -> list[tuple[str, str]]:
    found = []
    for info in pkgutil.iter_modules(svblur.cli.__path__):
        module = importlib.import_module(f"svblur.cli.{info.name}")
        found += _commands_in_text(module.__doc__ or "", f"svblur.cli.{info.name}", False)
    return found


DOCUMENTED = [
    found
    for page in PAGES
    for found in _commands_in_text(page.read_text(), page.relative_to(REPO).as_posix())
] + _docstring_commands()


def test_the_documentation_shows_every_command():
    shown = {command.split()[0] for _, command in DOCUMENTED}
    assert shown == set(HYDRA_APPS) | set(ARGPARSE_APPS) | {"svblur-compare"}, shown
    assert len(DOCUMENTED) > 40


def _first_value_of_sweeps(overrides: list[str]) -> list[str]:
    """A sweep ``key=a,b`` becomes ``key=a`` (compose takes one job's config)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    single = []
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override():
            value = next(override.sweep_string_iterator())
            single.append(f"{override.get_key_element()}={value}")
        else:
            single.append(text)
    return single


@pytest.mark.parametrize(("where", "command"), DOCUMENTED, ids=[c for _, c in DOCUMENTED])
def test_documented_command_composes(where, command):
    # placeholders such as <time> stand for a real value
    program, *args = shlex.split(re.sub(r"<[a-z]+>", "2026-01-01_00-00-00", command))
    if program in HYDRA_APPS:
        if "--config-dir" in args:
            pytest.skip("a user config folder: run by tests/test_wheel.py from the README")
        overrides = _first_value_of_sweeps([a for a in args if not a.startswith("-")])
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
                cfg = compose(HYDRA_APPS[program], overrides=overrides, return_hydra_config=True)
        finally:
            GlobalHydra.instance().clear()
        assert cfg.task_name, (where, command)
    elif program in ARGPARSE_APPS:
        ARGPARSE_APPS[program]().parse_args(args)
    else:
        assert program == "svblur-compare"
        cfg = load_preset(args)
        assert cfg.preset and cfg.models, (where, command)


def test_a_renamed_key_would_fail():
    """The check is real: an override of a key that does not exist does not compose."""
    with pytest.raises(Exception, match="no_such_key"):
        test_documented_command_composes("here", "svblur-train model.no_such_key=1")


def _slug(heading: str) -> str:
    """The anchor GitHub and MkDocs give a heading: lower case, punctuation dropped,
    spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_relative_links_point_at_files_and_headings_that_exist(page):
    """Links as GitHub reads them (the site build checks its own)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} points at a missing file"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{page.name}: {link}: no such heading"


def test_readme_and_prediction_page_show_the_picture_with_the_same_caption():
    def caption(page: Path) -> str:
        text = page.read_text()
        start = text.index("predict_example.png)")
        return text[text.index("\n*", start) : text.index(".*\n", start)]

    assert caption(REPO / "README.md") == caption(REPO / "docs" / "prediction.md")


def test_the_floors_picture_is_drawn_from_the_floors():
    spec = importlib.util.spec_from_file_location("floors_picture", REPO / "docs" / "floors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    drawn = (REPO / "docs" / "floors.svg").read_text()
    assert drawn == module.floors_svg(), "the floors changed: run python docs/floors.py"
    assert "inference" in drawn and "checkpoints" in drawn


def test_the_site_builds_with_every_link_and_reference_resolved(tmp_path):
    """``make docs`` in strict mode: a broken link, anchor, page missing from the nav or
    ``::: svblur.<package>`` reference fails; offline (no plugin fetches anything)."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert (tmp_path / "index.html").exists()
    for package in ("nn", "models", "systems", "checkpoints", "inference"):
        page = (tmp_path / "api" / package / "index.html").read_text()
        assert f'id="svblur.{package}"' in page, package
    assert (tmp_path / "results" / "compare_small" / "index.html").exists()


EXAMPLES = [
    (f"docs/{page.name}:{number}", code)
    for page in PAGES[1:]
    for number, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
]


@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_python_examples_of_the_pages_run(where, code, tmp_path, monkeypatch):
    """Each page's Python block runs as written (files it writes go to a temporary
    folder). README.md's example runs installed from a wheel, in tests/test_wheel.py."""
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {"__name__": "docs_example"})


def test_the_new_system_of_the_architecture_page_trains_validates_and_tests(tmp_path):
    """docs/architecture.md's example system is complete: it trains, is evaluated in its
    metric groups and records its kind in its checkpoints."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text[text.index("## How a new system is added") :]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    namespace: dict = {}
    exec(compile(code, "docs/architecture.md", "exec"), namespace)
    system_class = namespace["MySRTask"]
    assert system_class.kind in SYSTEM_KINDS

    generator = torch.Generator().manual_seed(0)
    batches = [
        {
            "lr": torch.rand(3, 8, 10, generator=generator),
            "hr": torch.rand(3, 16, 20, generator=generator),
        }
        for _ in range(4)
    ]
    loader = DataLoader(batches, batch_size=2)
    net = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(3, 3, 3, padding=1))
    system = system_class(net, optimizer=partial(torch.optim.Adam, lr=1e-3))
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(system, loader, loader)
    assert "val/sr/psnr" in trainer.callback_metrics
    assert "train/loss/l1" in trainer.callback_metrics
    (results,) = trainer.test(system, loader, verbose=False)
    assert results["test/sr/psnr"] > 0
    trainer.save_checkpoint(tmp_path / "my_sr.ckpt")
    checkpoint = torch.load(tmp_path / "my_sr.ckpt", weights_only=False)
    assert checkpoint[RECORD_KEY]["kind"] == "blind_sr"
    assert checkpoint[RECORD_KEY]["system"] == "MySRTask"
