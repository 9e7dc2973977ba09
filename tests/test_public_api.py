"""The public API is what `engine/__init__.py` exports, pinned: a change to it is a decision."""
import engine


def test_exported_members_are_pinned():
    assert sorted(engine.__all__) == sorted([
        "EdgeValue", "EngineError", "FolderBusy", "Graph", "GraphNode", "Link", "LinkRef", "ModelLoadError",
        "ItemList", "Node", "NodeError", "NodeExecutionError", "NodeOutput", "NodeRecord", "NodeRegistry", "NodeSpec",
        "RunCancelled", "RunResult", "SavedFiles", "Session", "ShownText", "Settings", "Sweep", "ValidationContext",
        "ValidationFailed", "ValidationResult", "Widget", "WorkflowFormatError", "default_registry", "execute",
        "execute_many", "load_workflow", "validate"])
    assert all(hasattr(engine, name) for name in engine.__all__)


def test_importing_the_engine_does_not_import_torch_or_the_nodes():
    import subprocess
    import sys

    code = "import sys, engine; print('torch' in sys.modules, 'nodes' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split() == ["False", "False"]
