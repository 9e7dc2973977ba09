"""What `run-graph --json` prints: one RunReport per workflow file (JSON Lines)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorReport(BaseModel):
    node_id: str | None = None
    node_type: str | None = None
    title: str | None = None
    input: str | None = None
    message: str
    kind: str = "invalid_input"


class NodeReport(BaseModel):
    type: str
    title: str | None = None
    status: Literal["executed", "cached", "skipped"]
    seconds: float = 0.0


class RunReport(BaseModel):
    file: str
    status: Literal["ok", "invalid", "failed"]
    errors: list[ErrorReport] = Field(default_factory=list)
    nodes: dict[str, NodeReport] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)
    seconds: float = 0.0
