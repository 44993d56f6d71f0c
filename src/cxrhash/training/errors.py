"""Why training stops: the errors the training engine raises, and the check of settings."""

from __future__ import annotations

from collections.abc import Mapping


class TrainingError(ValueError):
    """Training cannot start or continue (bad split, config mismatch on resume, …)."""


class DivergenceError(TrainingError):
    """The loss kept diverging after every allowed rollback."""


def refuse_invalid(
    settings: object,
    checks: Mapping[str, bool],
    *,
    what: str,
    need: str,
    error: type[TrainingError] = TrainingError,
) -> None:
    """Raise ``error`` naming every field of ``settings`` whose check is false (with its value)
    and what the fields need, e.g. "invalid C2L settings: lr=0 (need … lr > 0 …)"."""
    bad = [f"{k}={getattr(settings, k)!r}" for k, ok in checks.items() if not ok]
    if bad:
        raise error(f"invalid {what}: " + ", ".join(bad) + f" (need {need})")
