"""Read a workflow from a path, bytes or dict, and detect its format (UI, API prompt, PNG)."""
from __future__ import annotations

from pathlib import Path
import orjson
from pydantic import ValidationError

from schemas import ApiPrompt, UIWorkflow

from .convert import api_to_graph, ui_to_graph
from .errors import WorkflowFormatError
from .graph import Graph
from .registry import NodeRegistry, default_registry

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png_chunks(path: Path) -> dict[str, str]:
    """The text chunks (tEXt/iTXt/zTXt) of a PNG, as Pillow decodes them."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # text chunks after the image data are only read by load()
            return {k: v for k, v in getattr(img, "text", {}).items() if isinstance(v, str)}
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise WorkflowFormatError(f"cannot read PNG: {exc}", file=str(path)) from exc


def read_document(path: str | Path) -> tuple[dict, dict | None]:
    """Return (document, ui_workflow) for a JSON file or a PNG carrying a workflow.

    For a PNG the `prompt` chunk wins, because it is exactly what was executed; the `workflow`
    chunk is kept so that images written again can still be opened in ComfyUI.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WorkflowFormatError(f"cannot read file: {exc.strerror or exc}", file=str(path)) from exc
    if data.startswith(PNG_SIGNATURE):
        chunks = read_png_chunks(path)
        workflow = _parse_json(chunks["workflow"], path, "PNG chunk 'workflow'") if "workflow" in chunks else None
        if "prompt" in chunks:
            return _parse_json(chunks["prompt"], path, "PNG chunk 'prompt'"), workflow
        if workflow is not None:
            return workflow, workflow
        raise WorkflowFormatError("PNG carries no 'prompt' or 'workflow' text chunk", file=str(path))
    doc = _parse_json(data, path, "JSON")
    return doc, None


def _parse_json(data: bytes | str, path: Path | None, what: str) -> dict:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WorkflowFormatError(f"invalid {what}: {exc}", file=str(path) if path else None) from exc
    if not isinstance(doc, dict):
        raise WorkflowFormatError(f"{what} is a {type(doc).__name__}, expected an object",
                                  file=str(path) if path else None)
    return doc


def detect_format(doc: dict) -> str:
    """'ui' for frontend workflows, 'api' for prompts; raises when it is neither."""
    if isinstance(doc.get("nodes"), list):
        return "ui"
    if isinstance(doc.get("prompt"), dict) and "class_type" not in doc.get("prompt", {}):
        return "api-request"  # the body of POST /prompt: {"prompt": {...}, "extra_data": ...}
    if doc and all(isinstance(v, dict) and "class_type" in v for v in doc.values()):
        return "api"
    raise WorkflowFormatError("not a ComfyUI workflow: expected a UI workflow (with 'nodes' and "
                              "'links') or an API prompt ({id: {class_type, inputs}})")


def load_workflow(source: str | Path | dict | Graph, *, registry: NodeRegistry | None = None) -> Graph:
    """Load a UI workflow, an API prompt, or a PNG that carries one, into a `Graph`.

    UI workflows are converted with the registry's node definitions (widget order, defaults).
    """
    if isinstance(source, Graph):
        return source
    registry = registry or default_registry()
    if isinstance(source, dict):
        doc, ui_doc, label = source, None, None
    else:
        label = str(source)
        doc, ui_doc = read_document(source)
    try:
        kind = detect_format(doc)
    except WorkflowFormatError as exc:
        raise WorkflowFormatError(str(exc), file=label) from None
    try:
        if kind == "ui":
            graph = ui_to_graph(UIWorkflow.model_validate(doc), registry)
            graph.ui_workflow = doc
        else:
            prompt_doc = doc["prompt"] if kind == "api-request" else doc
            graph = api_to_graph(ApiPrompt.model_validate(prompt_doc))
            graph.ui_workflow = ui_doc or _extra_workflow(doc)
            if graph.ui_workflow is not None:
                _take_controls(graph, graph.ui_workflow, registry)
    except ValidationError as exc:
        raise WorkflowFormatError(_pydantic_summary(exc), file=label) from None
    graph.source = label
    return graph


def _take_controls(graph: Graph, ui_doc: dict, registry: NodeRegistry) -> None:
    """An API prompt carries no control_after_generate modes, but the UI workflow saved beside it
    (a PNG's `workflow` chunk, `extra_pnginfo`) does, and knows where each widget sits in it.
    Node ids are the same in both. A workflow that cannot be read leaves the prompt as it is."""
    try:
        ui_graph = ui_to_graph(UIWorkflow.model_validate(ui_doc), registry)
    except (ValidationError, ValueError, TypeError):
        return
    for key, mode in ui_graph.controls.items():
        if key[0] in graph.nodes:
            graph.controls[key] = mode
    graph.ui_widgets.update({k: v for k, v in ui_graph.ui_widgets.items() if k[0] in graph.nodes})


def _extra_workflow(doc: dict) -> dict | None:
    extra = doc.get("extra_data") or {}
    workflow = (extra.get("extra_pnginfo") or {}).get("workflow") if isinstance(extra, dict) else None
    return workflow if isinstance(workflow, dict) else None


def _pydantic_summary(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"{loc}: {err['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "malformed workflow: " + "; ".join(lines) + more

