"""The one exception family of the package; the CLI turns it into a line and an exit code."""

from __future__ import annotations

from typing import Any


class GkpError(Exception):
    """Bad input or usage: the model, a path or an option cannot be used (exit code 2)."""

    exit_code = 2


class ValidationFailed(GkpError):
    """The pruned model does not match its masked reference, or could not be run (exit 1).

    ``report`` holds everything measured up to the failure, for inspection.
    """

    exit_code = 1

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report
