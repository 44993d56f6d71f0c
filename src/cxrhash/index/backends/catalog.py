"""What the registered backends say about themselves, gathered for choosing one and for docs.

Every backend class declares ``exact``, ``serves_shard``, ``needs_server`` and a one-line
``summary`` (:class:`~cxrhash.index.backends.base.HammingBackend`); nothing here lists
backend names by hand. :func:`check_shard_backend` is the rule a
:class:`~cxrhash.index.store.HashIndex` applies to its backend; :func:`backend_help`,
:func:`backend_params_help` and :func:`backend_table` write the CLI help of ``cxrhash index
--backend`` / ``--backend-param`` and the table of backends in ``README.md`` (a test keeps
that table equal to this one).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from cxrhash.index.backends.base import BACKENDS, HammingBackend

#: The backend of every shard of a new index unless another is chosen.
DEFAULT_BACKEND = "flat"


def backend_classes(
    *, exact: bool | None = None, serves_shard: bool | None = None
) -> list[type[HammingBackend]]:
    """The registered backend classes with these properties (``None``: either), in the
    order help and docs list them: the default, the other exact ones, the approximate
    ones, then those that need a server; by name within each group."""
    classes = [BACKENDS.get(name) for name in BACKENDS.names()]
    return sorted(
        (
            cls
            for cls in classes
            if (exact is None or cls.exact == exact)
            and (serves_shard is None or cls.serves_shard == serves_shard)
        ),
        key=lambda cls: (cls.needs_server, not cls.exact, cls.name != DEFAULT_BACKEND, cls.name),
    )


def backend_names(*, exact: bool | None = None, serves_shard: bool | None = None) -> list[str]:
    """The names of :func:`backend_classes` with these properties, in the same order."""
    return [cls.name for cls in backend_classes(exact=exact, serves_shard=serves_shard)]


def check_shard_backend(name: str, bits: int, params: dict[str, Any] | None) -> dict[str, Any]:
    """The full parameters (defaults filled in) of backend ``name`` serving one shard of an
    index of ``bits``-bit codes.

    Raises:
        ValueError: ``name`` is unknown or cannot serve a shard, or ``params`` do not fit it.
    """
    shard_backends = backend_names(serves_shard=True)
    if name not in shard_backends:
        raise ValueError(
            f"backend {name!r} cannot serve the shards of a hash index; choose one of "
            f"{', '.join(shard_backends)}"
        )
    try:
        return BACKENDS.get(name).check_params(bits, dict(params or {}))
    except TypeError as err:
        raise ValueError(f"bad parameters for the {name} backend: {err}") from err


def backend_help() -> str:
    """The help of ``cxrhash index --backend``: every backend that can serve a shard."""
    described = [
        f"{cls.name} ({_kind(cls)}: {_plain(cls.summary)})"
        for cls in backend_classes(serves_shard=True)
    ]
    return "Search backend of a new index: " + "; ".join(described) + "."


def backend_params_help() -> str:
    """The help of ``cxrhash index --backend-param``: each shard backend's parameters with
    their defaults, read from its constructor."""
    described = []
    for cls in backend_classes(serves_shard=True):
        required = [f"{key}=… (required)" for key in cls.required_params]
        params = default_params(cls)
        if params or required:
            shown = [f"{key}={json.dumps(value)}" for key, value in params.items()]
            described.append(f"{cls.name}: {', '.join(required + shown)}")
    return (
        "KEY=VALUE parameter of the backend of a new index (repeatable; JSON values). "
        "Parameters and their defaults: " + "; ".join(described) + "."
    )


def default_params(cls: type[HammingBackend]) -> dict[str, Any]:
    """The keyword parameters of ``cls``'s constructor a user may set, and their defaults
    (a parameter the backend needs in an index, such as milvus's ``uri``, is left out:
    ``required_params``)."""
    signature = inspect.signature(cls.__init__)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.kind is p.KEYWORD_ONLY
        and p.default is not p.empty
        and p.name not in cls.internal_params
        and p.name not in cls.required_params
    }


def backend_table() -> str:
    """Every registered backend as a Markdown table (the one in ``README.md``)."""
    rows = [
        "| backend | exact? | serves a shard (`cxrhash index --backend`) | what it is |",
        "|---|---|---|---|",
    ]
    for cls in backend_classes():
        name = f"`{cls.name}`" + (" (default)" if cls.name == DEFAULT_BACKEND else "")
        exact = "yes, ties in database order" if cls.exact else "no (recall reported)"
        if cls.serves_shard:
            shard = "yes: a copy of the shard in a server" if cls.needs_server else "yes"
        else:
            shard = "no: keeps its codes in a server" if cls.needs_server else "no"
        rows.append(f"| {name} | {exact} | {shard} | {cls.summary} |")
    return "\n".join(rows) + "\n"


def _kind(cls: type[HammingBackend]) -> str:
    exact = "exact" if cls.exact else "approximate"
    return f"default, {exact}" if cls.name == DEFAULT_BACKEND else exact


def _plain(markdown: str) -> str:
    """A summary for a terminal: without Markdown's backticks."""
    return markdown.replace("`", "")
