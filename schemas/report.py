"""What `run-graph --json` prints: one `RunReport` per job, as JSON Lines. Clients can check
lines against `run_report.schema.json` (this model's JSON Schema, shipped beside it)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_PATH = Path(__file__).with_name("run_report.schema.json")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemReport(_Strict):
    """An error or a warning, with the node and input it concerns when there is one."""

    message: str
    kind: str = Field(description="machine-readable kind, e.g. value_not_in_list, required_input_missing")
    node_id: str | None = None
    node_type: str | None = None
    title: str | None = None
    input: str | None = None


class NodeReport(_Strict):
    type: str
    title: str | None = None
    status: Literal["executed", "cached", "disk", "skipped"] = Field(
        description="executed; cached: from this process's memory; disk: from the disk cache; "
                    "skipped: not needed for the outputs")
    seconds: float = 0.0
    bytes: int = Field(0, description="size of the node's output in the disk cache (0: not stored)")


class FileReport(_Strict):
    path: str
    bytes: int
    sha256: str
    reused: bool = Field(False, description="written by an earlier run and still intact, not rewritten")


class RunReport(_Strict):
    file: str = Field(description="the workflow's source: a path, or <graph>; with sweep values for batch jobs")
    status: Literal["ok", "invalid", "failed", "done"] = Field(
        description="ok; invalid: bad input (exit 2); failed: runtime error (exit 1); "
                    "done: finished by an earlier run of the same batch, skipped")
    job: str | None = Field(None, description="the batch job's id, as in manifest.jsonl")
    errors: list[ProblemReport] = Field(default_factory=list)
    warnings: list[ProblemReport] = Field(default_factory=list)
    nodes: dict[str, NodeReport] = Field(default_factory=dict)
    files: list[FileReport] = Field(default_factory=list, description="every file the outputs stand for")
    seconds: float = 0.0


def json_schema() -> dict:
    return RunReport.model_json_schema()
