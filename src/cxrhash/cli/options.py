"""Command options generated from a settings dataclass, so a new setting needs no CLI edit.

:func:`with_options` adds one ``--name`` option per setting to a command's signature
(Typer reads options from the signature); the command receives them as keyword
arguments, ``None`` where the user gave nothing, and passes them to its config.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])
_SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class Setting:
    """One generated option: the keyword it fills, its value type, help and flag name."""

    name: str
    kind: type
    help: str
    flag: str = ""

    @property
    def option(self) -> str:
        """``--image-size`` for ``image_size`` (or the flag given)."""
        return "--" + (self.flag or self.name).replace("_", "-")


def dataclass_settings(
    cls: type,
    helps: dict[str, str],
    *,
    skip: Iterable[str] = (),
    flags: dict[str, str] | None = None,
) -> list[Setting]:
    """A :class:`Setting` per scalar field of ``cls`` (optional or not), with ``helps``.

    Raises:
        ValueError: a field has no help text (a new setting must say what it does).
    """
    hints = typing.get_type_hints(cls)
    skipped = set(skip)
    out = []
    for f in fields(cls):
        kind = _scalar(hints[f.name])
        if f.name in skipped or kind is None:
            continue
        if f.name not in helps:
            raise ValueError(f"{cls.__name__}.{f.name} has no help text")
        out.append(Setting(f.name, kind, helps[f.name], (flags or {}).get(f.name, "")))
    return out


def with_options(settings: list[Setting]) -> Callable[[F], F]:
    """Add ``settings`` as keyword-only options (default ``None``) to a command that
    takes ``**values``; a ``bool`` becomes ``--name/--no-name``."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        params = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        for s in settings:
            decls = [f"{s.option}/--no-{s.option[2:]}"] if s.kind is bool else [s.option]
            optional: Any = s.kind | None
            annotation = Annotated[optional, typer.Option(*decls, help=s.help)]
            params.append(
                inspect.Parameter(
                    s.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
                )
            )
        func.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func

    return decorate


def _scalar(hint: Any) -> type | None:
    """``int`` for ``int`` or ``int | None``; ``None`` for anything else (dicts, lists)."""
    if hint in _SCALARS:
        return typing.cast(type, hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and args[0] in _SCALARS:
            return typing.cast(type, args[0])
    return None
