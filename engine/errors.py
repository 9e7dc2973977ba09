"""The exception tree of the engine.

    EngineError
    ├── WorkflowFormatError   the file cannot be read or is not a workflow at all
    ├── ValidationFailed      the workflow is readable but wrong; holds every NodeError
    ├── NodeExecutionError    a node raised while running; names the node
    ├── ModelLoadError        a model file or folder is missing, corrupt or of the wrong kind
    └── RunCancelled          the caller asked the run to stop

`NodeError` is not an exception on its own: it is one finding (node, input, message) that
`ValidationFailed` collects so that every problem is reported at once.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


@dataclass(frozen=True)
class NodeError:
    """One problem with one node (or with the workflow as a whole when node_id is None)."""

    message: str
    node_id: str | None = None
    node_type: str | None = None
    title: str | None = None
    input: str | None = None
    kind: str = "invalid_input"
    file: str | None = None

    def describe(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.node_id is not None:
            label = f"node {self.node_id}"
            if self.title and self.title != self.node_type:
                label += f" '{self.title}'"
            if self.node_type:
                label += f" ({self.node_type})"
            where.append(label)
        if self.input:
            where.append(f"input {self.input}")
        return (", ".join(where) + ": " if where else "") + self.message

    def to_dict(self) -> dict:
        return asdict(self)

    def in_file(self, file: str | None) -> "NodeError":
        return self if file is None else NodeError(**{**asdict(self), "file": file})


class WorkflowFormatError(EngineError):
    def __init__(self, message: str, *, file: str | None = None):
        self.file = file
        super().__init__(f"{file}: {message}" if file else message)


class ValidationFailed(EngineError):
    """The workflow has one or more problems; `errors` lists all of them."""

    def __init__(self, errors: list[NodeError], *, file: str | None = None):
        self.errors = [e.in_file(file) if e.file is None else e for e in errors]
        lines = "\n".join("  - " + e.describe() for e in self.errors)
        super().__init__(f"workflow is invalid ({len(self.errors)} problem(s)):\n{lines}")


class NodeExecutionError(EngineError):
    """A node failed at run time. The outputs of nodes that finished before it are kept."""

    def __init__(self, message: str, *, node_id: str, node_type: str, title: str | None = None,
                 input: str | None = None, kind: str = "execution_error"):
        self.error = NodeError(message, node_id=node_id, node_type=node_type, title=title,
                               input=input, kind=kind)
        super().__init__(self.error.describe())


class ModelLoadError(EngineError):
    """A model could not be loaded: the message names the path and what was expected there."""


class RunCancelled(EngineError):
    pass


@contextmanager
def node_errors(node_id: str, node_type: str, title: str | None) -> Iterator[None]:
    """Attach the node to any error raised inside, like httpx's request_context."""
    try:
        yield
    except (NodeExecutionError, RunCancelled):
        raise
    except ModelLoadError as exc:
        # A missing or broken model file is bad input, not a crash: callers map this kind to exit 2.
        raise NodeExecutionError(str(exc), node_id=node_id, node_type=node_type, title=title,
                                 kind="model_load_error") from exc
    except Exception as exc:  # noqa: BLE001 - any node failure becomes a typed, named error
        raise NodeExecutionError(f"{type(exc).__name__}: {exc}", node_id=node_id,
                                 node_type=node_type, title=title) from exc
