"""Errors every stage raises: what failed, why, and what to do about it."""

from __future__ import annotations


class MlxForkError(Exception):
    """A failure the user can act on. The CLI prints it without a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message
