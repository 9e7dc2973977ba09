"""The API "prompt" format that ComfyUI's /prompt executes: {node_id: {class_type, inputs, _meta}}."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

# In the API format a link is [source_node_id, output_slot]; ids may be written as ints.
Link = tuple[str, int]


class ApiMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    title: str | None = None


class ApiNode(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    class_type: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    meta: ApiMeta | None = Field(default=None, alias="_meta")


class ApiPrompt(RootModel[dict[str, ApiNode]]):
    pass
