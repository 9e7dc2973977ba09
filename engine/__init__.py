"""run-graph: a headless execution engine for ComfyUI workflows.

    from engine import execute, load_workflow
    result = execute("workflow.json", overrides={"14.seed": 42})
"""
from .batch import FolderBusy
from .errors import (EngineError, ModelLoadError, NodeError, NodeExecutionError, RunCancelled,
                     ValidationFailed, WorkflowFormatError)
from .graph import Graph, GraphNode, LinkRef
from .load import load_workflow
from .node import EdgeValue, ItemList, Link, Node, NodeOutput, NodeSpec, SavedFiles, ShownText, Widget
from .registry import NodeRegistry, default_registry
from .result import NodeRecord, RunResult
from .session import Session, execute, execute_many
from .settings import Settings
from .sweep import Sweep
from .validate import ValidationContext, ValidationResult, validate

__all__ = [
    "EdgeValue", "EngineError", "FolderBusy", "Graph", "GraphNode", "Link", "LinkRef", "ModelLoadError",
    "ItemList", "Node", "NodeError", "NodeExecutionError", "NodeOutput", "NodeRecord", "NodeRegistry", "NodeSpec",
    "RunCancelled", "RunResult", "SavedFiles", "Session", "ShownText", "Settings", "Sweep", "ValidationContext",
    "ValidationFailed", "ValidationResult", "Widget", "WorkflowFormatError", "default_registry", "execute",
    "execute_many", "load_workflow", "validate",
]
