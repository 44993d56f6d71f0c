"""The ``cxrhash`` command line: train, pretrain, eval, index, search, bench, demo,
phantom, methods, serve, export. Each command lives in the module of its area and calls the library;
user errors reach the terminal through :func:`cxrhash.cli.common.user_errors`."""

from __future__ import annotations

import sys

from rich.markup import escape

from cxrhash.cli import (  # noqa: F401  (registers commands)
    archive,
    bench,
    evaluate,
    export,
    misc,
    serve,
    train,
)
from cxrhash.cli.common import USER_ERRORS, app, err, error_text

__all__ = ["app", "main"]


def main() -> None:
    """The console entry point: runs the app; a user error raised outside a command (e.g.
    while Typer builds it) is one line and exit code 2 too, a traceback only with -v."""
    try:
        app()
    except USER_ERRORS as exc:
        if "--verbose" in sys.argv or "-v" in sys.argv:
            raise
        err.print(f"[bold red]error:[/] {escape(error_text(exc))}")
        sys.exit(2)
