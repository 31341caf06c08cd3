"""Typed errors shared by every layer of the tool.

Library code raises these; only the CLI prints them. Each carries a ``hint``: what the user can do.
"""

from __future__ import annotations


class NasError(Exception):
    """Base class of every error the tool reports to a user (one line: problem, then the fix)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class SpecError(NasError, ValueError):
    """An architecture spec, spec string or preset name is invalid."""
