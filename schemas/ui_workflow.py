"""The UI "workflow" format saved by the ComfyUI frontend: schema 0.4 (links as 6-arrays) and
schema 1 (links as objects), including subgraph definitions.

Real files carry many keys the engine does not use (pos, size, groups, extra.ds, flags...): they
are accepted and ignored (`extra="allow"`). What the engine uses is checked strictly.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NodeId = int | str


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class WidgetRef(_Loose):
    name: str


class UINodeInput(_Loose):
    name: str
    type: Any = None
    link: int | None = None
    widget: WidgetRef | None = None
    label: str | None = None


class UINodeOutput(_Loose):
    name: str | None = None
    type: Any = None
    links: list[int] | None = None


class UINode(_Loose):
    id: NodeId
    type: str
    mode: int = 0
    title: str | None = None
    inputs: list[UINodeInput] = Field(default_factory=list)
    outputs: list[UINodeOutput] = Field(default_factory=list)
    widgets_values: list[Any] | dict[str, Any] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("inputs", "outputs", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class UILink(_Loose):
    id: int
    origin_id: NodeId
    origin_slot: int
    target_id: NodeId
    target_slot: int
    type: Any = None

    @model_validator(mode="before")
    @classmethod
    def _from_array(cls, value: Any) -> Any:
        # Schema 0.4: [link_id, origin_id, origin_slot, target_id, target_slot, type]
        if isinstance(value, (list, tuple)):
            if len(value) < 5:
                raise ValueError(f"a link array needs at least 5 items, got {len(value)}")
            keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
            return dict(zip(keys, value))
        return value


class SubgraphIO(_Loose):
    name: str
    type: Any = None
    linkIds: list[int] | None = None


class SubgraphDefinition(_Loose):
    id: str
    name: str | None = None
    nodes: list[UINode] = Field(default_factory=list)
    links: list[UILink] = Field(default_factory=list)
    inputs: list[SubgraphIO] = Field(default_factory=list)
    outputs: list[SubgraphIO] = Field(default_factory=list)
    definitions: "Definitions | None" = None


class Definitions(_Loose):
    subgraphs: list[SubgraphDefinition] = Field(default_factory=list)


class UIWorkflow(_Loose):
    version: float | int | None = None
    nodes: list[UINode]
    links: list[UILink] = Field(default_factory=list)
    definitions: Definitions | None = None

    @field_validator("links", mode="before")
    @classmethod
    def _drop_null_links(cls, value: Any) -> Any:
        # Some saves carry null holes in the links array after deletions.
        return [v for v in value if v is not None] if isinstance(value, list) else value

    def all_subgraphs(self) -> dict[str, SubgraphDefinition]:
        """Every subgraph definition, nested ones included, by id."""
        found: dict[str, SubgraphDefinition] = {}
        stack = [self.definitions]
        while stack:
            defs = stack.pop()
            if defs is None:
                continue
            for sg in defs.subgraphs:
                found.setdefault(sg.id, sg)
                stack.append(sg.definitions)
        return found


SubgraphDefinition.model_rebuild()
