"""run-graph: a headless execution engine for ComfyUI workflows.

    from engine import execute, load_workflow
    result = execute("workflow.json", overrides={"14.seed": 42})
"""
from .errors import (EngineError, ModelLoadError, NodeError, NodeExecutionError, RunCancelled,
                     ValidationFailed, WorkflowFormatError)
from .graph import Graph, GraphNode, LinkRef
from .load import load_workflow
from .node import EdgeValue, Link, Node, NodeOutput, NodeSpec, SavedFiles, Widget
from .registry import NodeRegistry
from .session import RunResult, Session, default_registry, execute, execute_many
from .settings import Settings
from .sweep import Sweep
from .validate import ValidationResult, validate

__all__ = [
    "EdgeValue", "EngineError", "Graph", "GraphNode", "Link", "LinkRef", "ModelLoadError", "Node",
    "NodeError", "NodeExecutionError", "NodeOutput", "NodeRegistry", "NodeSpec", "RunCancelled",
    "RunResult", "SavedFiles", "Session", "Settings", "Sweep", "ValidationFailed", "ValidationResult",
    "Widget", "WorkflowFormatError", "default_registry", "execute", "execute_many", "load_workflow",
    "validate",
]
