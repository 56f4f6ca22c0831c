"""What the pipeline's management commands share: one ``--model`` syntax, the profile
lookup, where status lines go, and progress bars that log lines do not break.

A user's mistake (a wrong name, a file where a folder is wanted) is a ``CommandError``
whose message says what to write instead: Django prints it on stderr, without a
traceback, and exits 1.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser
from tqdm import tqdm

if TYPE_CHECKING:
    from pipeline.imaging import Profile
    from pipeline.state import Target

MODEL_METAVAR = "APP.MODEL[.FIELD]"


def add_model_argument(parser: CommandParser, *, what: str, dest: str = "model") -> None:
    """The ``--model`` option, the same in every command (repeatable)."""
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        dest=dest,
        metavar=MODEL_METAVAR,
        help=f"{what}: app_label.Model (all its managed image fields) or "
        "app_label.Model.field (repeatable)",
    )


def target_label(target: Target) -> str:
    """``app_label.Model.field``."""
    return f"{target.label}.{target.field.name}"


def select_targets(specs: Iterable[str], targets: Sequence[Target] | None = None) -> list[Target]:
    """The managed fields named by ``--model`` values: ``app.Model`` (every managed field
    of the model) or ``app.Model.field``, model labels in any case, a proxy model meaning
    its concrete model; every managed field when none is named.

    ``targets``: the managed fields to choose from (default: the project's)."""
    from pipeline.state import managed_targets

    every = list(managed_targets() if targets is None else targets)
    specs = list(specs)
    if not specs:
        return every
    known = ", ".join(sorted(target_label(t) for t in every)) or "none"
    # A proxy's rows live in its concrete model's table, which the targets name.
    concrete = {
        m._meta.label_lower: m._meta.concrete_model._meta.label_lower for m in apps.get_models()
    }
    chosen: list[Target] = []
    for spec in specs:
        parts = spec.split(".")
        if len(parts) not in (2, 3) or not all(parts):
            raise CommandError(
                f"--model {spec}: write app_label.Model or app_label.Model.field (managed: {known})"
            )
        model_label = ".".join(parts[:2]).lower()
        model_label = concrete.get(model_label, model_label)
        of_model = [t for t in every if t.label.lower() == model_label]
        if not of_model:
            raise CommandError(
                f"--model {spec}: no managed image field on that model (managed: {known})"
            )
        if len(parts) == 3:
            fields = ", ".join(target_label(t) for t in of_model)
            of_model = [t for t in of_model if t.field.name == parts[2]]
            if not of_model:
                raise CommandError(f"--model {spec}: not a managed image field (use {fields})")
        chosen += [t for t in of_model if t not in chosen]
    return chosen


def profile_named(name: str | None) -> Profile:
    """The profile called ``name`` (the default profile when None)."""
    from pipeline.conf import pipeline_settings

    settings = pipeline_settings()
    try:
        return settings.profile(name)
    except ImproperlyConfigured:
        known = ", ".join(sorted(settings.profiles))
        raise CommandError(
            f"--profile {name}: no such profile. Use one of: {known} "
            "(or define it in settings.PIPELINE['PROFILES'])"
        ) from None


def _plain(text: str) -> str:
    return text


def status(stream: Any, message: str) -> None:
    """A status line on ``stream`` without the error colour Django gives stderr (for the
    commands whose stdout carries JSON)."""
    stream.write(message, style_func=_plain)


class _AboveTheBar(logging.Handler):
    """Stands in for a console handler while a bar is shown: ``tqdm.write`` prints the
    line above the bar and redraws the bar below it, instead of through it."""

    def __init__(self, original: logging.StreamHandler) -> None:
        super().__init__(original.level)
        self.setFormatter(original.formatter)
        self.filters = list(original.filters)
        self.stream = original.stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # what logging.Handler.emit does: report, never raise
            self.handleError(record)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and handler.stream in (
        sys.stdout,
        sys.stderr,
    )


@contextlib.contextmanager
def _log_above(bar: tqdm) -> Iterator[None]:
    """Like ``tqdm.contrib.logging.logging_redirect_tqdm``, for every logger with a console
    handler, and keeping each handler's level (tqdm's drops it)."""
    if bar.disable:
        yield
        return
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    swapped: list[tuple[logging.Logger, list[logging.Handler]]] = []
    for logger in loggers:
        if isinstance(logger, logging.Logger) and any(map(_is_console, logger.handlers)):
            swapped.append((logger, logger.handlers))
            logger.handlers = [
                _AboveTheBar(h) if _is_console(h) else h  # type: ignore[arg-type]
                for h in logger.handlers
            ]
    try:
        yield
    finally:
        for logger, handlers in swapped:
            logger.handlers = handlers


@contextlib.contextmanager
def progress_bar(**kwargs: Any) -> Iterator[tqdm]:
    """A tqdm bar on stderr, drawn only on a terminal (stdout carries the results), with
    log lines printed above it while it is shown instead of through it."""
    kwargs.setdefault("disable", None)  # None: only on a terminal
    with tqdm(file=sys.stderr, **kwargs) as bar, _log_above(bar):
        yield bar
