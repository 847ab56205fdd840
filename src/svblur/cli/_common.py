"""Shared plumbing of the Hydra entry points (the only layer that imports Hydra)."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from svblur.errors import InputError

log = logging.getLogger("svblur")

F = TypeVar("F", bound=Callable[..., Any])

#: Exceptions that mean "the user's input is wrong": reported in one line, no traceback.
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    InputError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


#: Where Hydra finds svblur's configs: the ``conf`` folder shipped inside the package.
CONFIG_MODULE = "svblur.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"


def apply_extras(cfg: DictConfig) -> None:
    """Optional conveniences before the run: silence warnings, print the config."""
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("print_config"):
        log.info("Configuration:\n%s", OmegaConf.to_yaml(cfg, resolve=True))


def require(cfg: DictConfig, key: str, expected: str) -> Any:
    """Return ``cfg[key]`` or raise an error that names the missing config field."""
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        raise InputError(f"config field '{key}' is missing: expected {expected}")
    return value


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether tracebacks were asked for: ``HYDRA_FULL_ERROR=1`` or ``--debug``."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or "--debug" in (argv or [])


def input_error_message(error: BaseException) -> str | None:
    """The one-line message for a bad-input error, ``None`` for anything else (a bug).

    A config value that a constructor rejects (Hydra's ``InstantiationException`` around
    a ``ValueError``/``TypeError``) counts as bad input, named by its target.
    """
    if isinstance(error, INPUT_ERRORS):
        if isinstance(error, OSError) and error.filename and str(error.filename) not in str(error):
            message = f"{error.filename}: {error.strerror or error}"
        else:
            message = str(error)
    elif isinstance(error, InstantiationException) and isinstance(
        error.__cause__, (ValueError, TypeError)
    ):
        message = f"config error: {error.__cause__}"
    else:
        return None
    return " ".join(message.split())


def exit_on_input_error(prog: str, debug: bool | None = None) -> Callable[[F], F]:
    """Decorate a command's body: bad input ends it with one line on stderr and status 2.

    Tracebacks appear only when asked for (:func:`debug_requested`); other exceptions
    (bugs) keep theirs.
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as error:
                message = input_error_message(error)
                if message is None or (debug if debug is not None else debug_requested()):
                    raise
                print(f"{prog}: error: {message}", file=sys.stderr)
                raise SystemExit(2) from None

        return wrapper  # type: ignore[return-value]

    return decorate


def instantiate_list(cfg: DictConfig | None, what: str) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a config group (callbacks, loggers)."""
    objects: list[Any] = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"config group '{what}' must be a mapping, got {type(cfg).__name__}")
    for name, entry in cfg.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            log.info("Instantiating %s <%s> (%s)", what, entry._target_, name)
            objects.append(instantiate(entry))
    return objects


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Seed, then build data module, model, callbacks, loggers and trainer from ``cfg``."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    # _convert_="all": plain lists/dicts, so that saved hyperparameters load with
    # torch.load(weights_only=True).
    datamodule = instantiate(
        require(cfg, "data", "a data config (data=synthetic, ...)"), _convert_="all"
    )
    model = instantiate(
        require(cfg, "model", "a model config (model=cmos, model=unet, ...)"), _convert_="all"
    )
    net_cfg = OmegaConf.select(cfg, "model.net")
    if hasattr(model, "net_config") and isinstance(net_cfg, DictConfig):
        model.net_config = OmegaConf.to_container(net_cfg, resolve=True)
    callbacks = instantiate_list(cfg.get("callbacks"), "callback")
    loggers = instantiate_list(cfg.get("logger"), "logger")
    trainer = instantiate(
        require(cfg, "trainer", "a trainer config (trainer=cpu, ...)"),
        callbacks=callbacks,
        logger=loggers or False,
    )
    hparams = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(hparams)
    return datamodule, model, trainer


def finish(loggers: list[Logger]) -> None:
    """Close W&B runs so that each job of a multirun gets its own run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()


def metrics_as_floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def ensure_tty_safe() -> None:
    """Rich progress bars need a terminal size; give one when output is piped (CI)."""
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "120")


def run_hydra_app(hydra_main: Any) -> None:
    """Run a ``@hydra.main(config_path=CONFIG_PATH)`` function.

    The folder the command was started from is appended to ``sys.path`` (as ``python -m``
    does), so that a ``_target_`` naming a module of the user's own project imports.
    """
    ensure_tty_safe()
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    hydra_main()
