"""Documentation that is executed, not trusted: every ``svblur-*`` command in README.md and
in the command-line modules' docstrings must compose.

Hydra commands (train, eval, predict) are composed with Hydra's compose API, so a renamed
config group or key fails here; the argparse commands are parsed by their own parsers; a
comparison preset is loaded with its arguments. Commands that need data or checkpoints
only need to compose (nothing runs).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

import svblur.cli
from svblur.cli import check_data, convert, make_dataset
from svblur.conf import config_dir
from svblur.experiments import load_preset

REPO = Path(__file__).resolve().parents[1]
HYDRA_APPS = {
    "svblur-train": "train",
    "svblur-eval": "eval",
    "svblur-predict": "predict",
    "svblur-degrade": "degrade",
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


DOCUMENTED = (
    _commands_in_text((REPO / "README.md").read_text(), "README.md") + _docstring_commands()
)


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
