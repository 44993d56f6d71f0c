"""What every command shares: the Typer app, the consoles, logging, and the one path by
which a user error reaches the terminal (one line, exit code 2, a traceback only with
``--verbose``)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="Content-based retrieval of chest radiographs by deep hashing.\n\n"
    "Typical flow: `cxrhash train --data nih:DIR --out runs/a` → `cxrhash eval runs/a` → "
    "`cxrhash index --checkpoint runs/a --data nih:DIR --out idx` → "
    "`cxrhash search x.png --index idx`. `cxrhash demo` does all of it on phantom data.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # messages stay whole lines, for grep and logs

DATA_HELP = (
    "Dataset spec: nih:PATH (Data_Entry_2017.csv / labels.csv, or a folder holding them), "
    "chexpert:CSV[?uncertain=ones|zeros|ignore], chestmnist:NPZ[?split=train|val|test] "
    "(all three official parts, kept apart by the split, when omitted), "
    "folder:DIR?csv=FILE, phantom:DIR, dicomweb:URL[?modality=CR,DX&since=YYYYMMDD&"
    "labels=CSV&user=NAME&password_env=VAR|token_env=VAR&verify=true|false|CA.pem] (a PACS "
    "over DICOMweb: docs/pacs.md)."
)
#: What a user can get wrong (a bad option, file, checkpoint, index or dataset): one line.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, KeyError, OSError)

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(verbose: bool) -> None:
    """INFO with ``--verbose``, else WARNING, on stderr."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on one line and exit with code 2."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code=2)


def error_text(exc: BaseException) -> str:
    """The one line shown for a user error (a KeyError's repr quotes become its text)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def user_errors(func: F) -> F:
    """Wrap a command so a user error ends it with :func:`fail`, unless ``--verbose``
    asks for the traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            if kwargs.get("verbose"):
                raise
            fail(error_text(exc))

    return wrapper  # type: ignore[return-value]


def command(*names: str, **options: Any) -> Callable[[F], F]:
    """``app.command`` for a function whose user errors go through :func:`user_errors`."""

    def register(func: F) -> F:
        app.command(*names, **options)(user_errors(func))
        return func

    return register


def key_values(items: list[str], option: str) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` options; a value is JSON where it parses (``8``, ``true``), else text."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} expects KEY=VALUE, got {item!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def launch(nproc: int, drop: tuple[str, ...], max_restarts: int = 0) -> NoReturn:
    """Run this very command, without its options ``drop`` (each taking a value), in
    ``nproc`` processes under torchrun, then exit with torchrun's exit code."""
    import subprocess
    import sys

    from cxrhash.training.distributed import launch_command

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg in drop or arg.split("=", 1)[0] in drop:
            skip = arg in drop
            continue
        argv.append(arg)
    raise typer.Exit(subprocess.call(launch_command(nproc, argv, max_restarts)))
