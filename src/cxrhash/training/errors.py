"""Why training stops: the errors the training engine raises."""

from __future__ import annotations


class TrainingError(ValueError):
    """Training cannot start or continue (bad split, config mismatch on resume, …)."""


class DivergenceError(TrainingError):
    """The loss kept diverging after every allowed rollback."""
