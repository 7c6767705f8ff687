"""Errors a user can cause, each naming the spec field at fault."""

from __future__ import annotations


class PipelineError(ValueError):
    """A deterministic error in the model's spec or data: retrying will not help."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
