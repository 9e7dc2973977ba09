"""The aiohttp application: ComfyUI's routes, answered both bare and under /api/.

Routes only translate: validation is the Session's, the queue and history the store's, running
the worker's. Requests never wait on a running prompt: the worker has its own thread, and
validation runs in the default executor.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import platform
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from ..atomic import atomic_write
from ..errors import EngineError, NodeError
from ..settings import UnsafePathError, package_version
from .store import TaskStore
from .ui import FrontendRoutes, add_frontend
from .worker import PromptWorker

log = logging.getLogger("run_graph.server")
MAX_UPLOAD_BYTES = 100 * 2**20  # ComfyUI's default
STORE, WORKER = web.AppKey("store", TaskStore), web.AppKey("worker", PromptWorker)
FOLDERS = ("output", "input")


class Hub:
    """The open WebSockets by client id; safe to call from the worker thread."""

    def __init__(self):
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def send(self, kind: str, data: dict, client: str | None) -> None:
        if self.loop is not None:
            asyncio.run_coroutine_threadsafe(self._send({"type": kind, "data": data}, client), self.loop)

    def send_binary(self, frame: bytes, client: str | None) -> None:
        if self.loop is not None:
            asyncio.run_coroutine_threadsafe(self._send(frame, client), self.loop)

    async def _send(self, message: dict | bytes, client: str | None) -> None:
        targets = list(self.sockets.values()) if client is None else [self.sockets[client]] \
            if client in self.sockets else []  # a client that is not connected misses it, as in ComfyUI
        for socket in targets:
            try:
                await (socket.send_bytes(message) if isinstance(message, bytes) else socket.send_json(message))
            except (ConnectionError, RuntimeError):
                pass  # closing: its handler removes it


def _is_loopback(host: str) -> bool:
    name = urlsplit("//" + (host or "")).hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _guard(token: str | None):
    @web.middleware
    async def guard(request: web.Request, handler):
        # ComfyUI's defence against DNS rebinding: a loopback Host must match the Origin.
        origin = request.headers.get("Origin")
        if origin and _is_loopback(request.host) and urlsplit(origin).netloc != request.host:
            return web.Response(status=403)
        if token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ") or request.query.get("token")
            if given != token:
                return web.json_response({"error": "missing or wrong token"}, status=401)
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:  # noqa: BLE001 - a bad request never shows a traceback or stops the server
            log.exception("%s %s failed", request.method, request.path)
            return web.json_response({"error": "internal error"}, status=500)
    return guard


class Routes:
    def __init__(self, session: Any, store: TaskStore, worker: PromptWorker, hub: Hub,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES):
        self.session, self.store, self.worker, self.hub = session, store, worker, hub
        self.settings = session.settings
        self.max_upload_bytes = max_upload_bytes

    def table(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", "/ws", self.ws), ("GET", "/prompt", self.get_prompt), ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue), ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.interrupt), ("GET", "/history", self.get_history),
            ("POST", "/history", self.post_history), ("GET", "/history/{prompt_id}", self.get_history_item),
            ("GET", "/view", self.view), ("POST", "/upload/image", self.upload_image),
            ("POST", "/upload/mask", self.upload_mask),
            ("GET", "/object_info", self.object_info), ("GET", "/object_info/{node_class}", self.object_info_one),
            ("GET", "/system_stats", self.system_stats), ("GET", "/features", self.features),
            ("GET", "/embeddings", self.embeddings), ("GET", "/models", self.models),
            ("GET", "/models/{folder}", self.models_in), ("POST", "/free", self.free),
        ]

    # -- the WebSocket ------------------------------------------------------------------------

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        client = request.query.get("clientId") or uuid.uuid4().hex
        self.hub.sockets[client] = socket
        try:
            await socket.send_json({"type": "status", "data": {**self.worker.status(), "sid": client}})
            # A client that reconnects mid-run learns which node is running; never "node: null"
            # here, which clients read as the end of their prompt
            current = self.worker.current
            if current and current[1] == client and self.worker.last_node is not None:
                await socket.send_json({"type": "executing", "data": {"node": self.worker.last_node,
                                                                      "prompt_id": current[0]}})
            async for message in socket:
                if message.type == WSMsgType.TEXT and '"feature_flags"' in message.data:
                    await socket.send_json({"type": "feature_flags", "data": self._features()})
        finally:
            if self.hub.sockets.get(client) is socket:
                del self.hub.sockets[client]
        return socket

    # -- the queue ----------------------------------------------------------------------------

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self.store.remaining()}})

    async def post_prompt(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, dict):
            return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided", "details": "",
                                                "extra_info": {}}, "node_errors": {}}, status=400)
        targets = [str(t) for t in body["partial_execution_targets"]] \
            if isinstance(body.get("partial_execution_targets"), list) else None
        # Inline: validation takes a millisecond or two, less than handing it to a thread and back
        # while the worker thread holds the GIL.
        try:
            good, errors = self.session.check_outputs(prompt, targets)
        except EngineError as exc:  # unreadable as a prompt at all
            return web.json_response(comfy_errors(getattr(exc, "errors", None) or
                                                  [NodeError(str(exc), kind="invalid_prompt")], prompt), status=400)
        if not good:
            return web.json_response(comfy_errors(errors, prompt), status=400)
        number = float(body["number"]) if "number" in body else self.store.next_number()
        if body.get("front"):
            number = -number
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        # As ComfyUI: the valid outputs run; the others are reported and left out
        self.store.enqueue(prompt_id, number, prompt, extra, good)
        self.hub.send("status", self.worker.status(), None)
        return web.json_response({"prompt_id": prompt_id, "number": number,
                                  "node_errors": comfy_errors(errors, prompt)["node_errors"]})

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response({"queue_running": self.store.tasks("running"),
                                  "queue_pending": self.store.tasks("pending")})

    async def post_queue(self, request: web.Request) -> web.Response:
        await self._clear_or_delete(request, "pending")
        self.hub.send("status", self.worker.status(), None)
        return web.Response(status=200)

    async def _clear_or_delete(self, request: web.Request, state: str) -> None:
        """ComfyUI's `{"clear": true}` and `{"delete": [prompt ids]}`, for the queue or the history."""
        body = await _json_body(request)
        if body.get("clear"):
            self.store.delete(state)
        if isinstance(body.get("delete"), list):
            self.store.delete(state, body["delete"])

    async def interrupt(self, request: web.Request) -> web.Response:
        body = await _json_body(request, required=False)
        self.worker.interrupt(body.get("prompt_id"))
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        max_items, offset = _int(request.query.get("max_items")), _int(request.query.get("offset")) or 0
        return web.json_response(self.store.history(max_items=max_items, offset=offset))

    async def get_history_item(self, request: web.Request) -> web.Response:
        return web.json_response(self.store.history(request.match_info["prompt_id"]))  # {} when unknown

    async def post_history(self, request: web.Request) -> web.Response:
        await self._clear_or_delete(request, "done")
        return web.Response(status=200)

    # -- files --------------------------------------------------------------------------------

    def _folder(self, kind: str) -> Path:
        if kind not in FOLDERS:
            raise web.HTTPBadRequest(text=f"type must be one of {', '.join(FOLDERS)}")
        return self.settings.output_dir if kind == "output" else self.settings.input_dir

    async def view(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("filename")
        if name is None:
            raise web.HTTPNotFound()
        for suffix, kind in ((" [output]", "output"), (" [input]", "input")):
            if name.endswith(suffix):
                name, request_type = name[: -len(suffix)], kind
                break
        else:
            request_type = request.query.get("type", "output")
        if not name or name.startswith("/") or ".." in Path(name).parts:
            raise web.HTTPBadRequest()
        folder = self._folder(request_type)
        try:
            path = self.settings.contained_path(folder, str(Path(request.query.get("subfolder", "")) / name), "file")
        except UnsafePathError:
            raise web.HTTPForbidden() from None
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{path.name}"'})

    async def upload_image(self, request: web.Request) -> web.Response:
        return await self._upload(request, lambda data, form: data)

    async def upload_mask(self, request: web.Request) -> web.Response:
        """ComfyUI's mask editor: the uploaded image's alpha becomes the alpha of the image
        `original_ref` names (its PNG text chunks kept), saved as a new upload."""
        return await self._upload(request, self._masked)

    def _masked(self, data: bytes, form) -> bytes:
        import io
        import json

        from PIL import Image, PngImagePlugin

        try:
            ref = json.loads(str(form.get("original_ref", "")))
            name = str(ref["filename"])
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text="original_ref must be JSON naming the original's filename") from None
        for suffix, kind in ((" [output]", "output"), (" [input]", "input")):
            if name.endswith(suffix):
                name, ref["type"] = name[: -len(suffix)], kind
        if not name or name.startswith("/") or ".." in Path(name).parts:
            raise web.HTTPBadRequest(text="original_ref leaves its folder")
        try:
            original = self.settings.contained_path(self._folder(str(ref.get("type", "output"))),
                                                    str(Path(str(ref.get("subfolder", ""))) / name), "original_ref")
        except UnsafePathError:
            raise web.HTTPForbidden() from None
        if not original.is_file():
            raise web.HTTPNotFound(text="original_ref names no file")
        try:
            with Image.open(original) as source, Image.open(io.BytesIO(data)) as mask:
                text = dict(getattr(source, "text", {}))
                result = source.convert("RGBA")
                result.putalpha(mask.convert("RGBA").getchannel("A"))
        except (OSError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"not an image: {exc}") from None
        metadata = PngImagePlugin.PngInfo()
        for key, value in text.items():
            metadata.add_text(key, value)
        out = io.BytesIO()
        result.save(out, format="PNG", compress_level=4, pnginfo=metadata)
        return out.getvalue()

    async def _upload(self, request: web.Request, transform) -> web.Response:
        form = await request.post()
        upload = form.get("image")
        if not isinstance(upload, web.FileField) or not upload.filename:
            raise web.HTTPBadRequest(text="no image file in the form")
        kind = str(form.get("type", "input"))
        folder = self._folder(kind)
        subfolder = str(form.get("subfolder", ""))
        try:
            target = self.settings.contained_path(folder, str(Path(subfolder) / Path(upload.filename).name), "upload")
        except UnsafePathError:
            raise web.HTTPBadRequest(text="the upload's path leaves its folder") from None
        data = transform(upload.file.read(), form)
        overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
        stem, suffix, counter = target.stem, target.suffix, 1
        while target.exists() and not overwrite and target.read_bytes() != data:
            target = target.with_name(f"{stem} ({counter}){suffix}")
            counter += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda handle: handle.write(data))
        return web.json_response({"name": target.name, "subfolder": subfolder, "type": kind})

    # -- discovery ----------------------------------------------------------------------------

    def _info(self, name: str) -> dict:
        spec = self.session.registry.spec(name)
        info = spec.to_info()
        listing = _Listing(self.settings)
        for section in ("required", "optional"):
            info["input"][section] = {i.name: _comfy_input(i, listing) for i in spec.inputs
                                      if i.is_required == (section == "required")}
        return {**info, "python_module": "nodes"}

    async def object_info(self, request: web.Request) -> web.Response:
        info = {name: self._info(name) for name in self.session.registry}
        return web.json_response({**_frontend_expected(info), **info})

    async def object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        return web.json_response({name: self._info(name)} if name in self.session.registry else {})

    async def system_stats(self, request: web.Request) -> web.Response:
        return web.json_response({"system": {
            "os": sys.platform, "python_version": sys.version, "pytorch_version": package_version("torch"),
            "comfyui_version": f"run-graph {package_version('run-graph')}", "embedded_python": False,
            "argv": sys.argv, "platform": platform.platform()}, "devices": []})

    def _features(self) -> dict:
        return {"supports_preview_metadata": True, "max_upload_size": self.max_upload_bytes}

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(self._features())

    async def embeddings(self, request: web.Request) -> web.Response:
        folder = self.settings.models_dir / "embeddings"
        return web.json_response(sorted(p.stem for p in folder.glob("*") if p.is_file()) if folder.is_dir() else [])

    async def models(self, request: web.Request) -> web.Response:
        root = self.settings.models_dir
        return web.json_response(sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])

    async def models_in(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        root = self.settings.models_dir / folder
        if "/" in folder or folder.startswith(".") or not root.is_dir():
            raise web.HTTPNotFound()
        return web.json_response(sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()))

    async def free(self, request: web.Request) -> web.Response:
        body = await _json_body(request, required=False)
        if body.get("unload_models"):
            self.session.models.clear()
        if body.get("free_memory"):
            self.session.cache.clear()
        return web.Response(status=200)


async def _json_body(request: web.Request, required: bool = True) -> dict:
    if not required and not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        raise web.HTTPBadRequest(text=f"not a whole number: {text!r}") from None


def comfy_errors(errors: list, prompt: dict) -> dict:
    """The engine's validation errors in ComfyUI's 400 shape: a whole-prompt `error` and
    `node_errors[node_id] = {errors: [{type, message, details, extra_info}], class_type, dependent_outputs}`."""
    node_errors: dict[str, dict] = {}
    for error in errors:
        if error.node_id is None:
            continue
        entry = node_errors.setdefault(error.node_id, {"errors": [], "dependent_outputs": [],
                                                       "class_type": error.node_type})
        entry["errors"].append({"type": _comfy_type(error), "message": error.message,
                                "details": f"{error.input}: {error.message}" if error.input else error.message,
                                "extra_info": {"input_name": error.input}})
    whole = next((e for e in errors if e.node_id is None), None)
    kind = whole.kind if whole and whole.kind in ("prompt_no_outputs", "invalid_prompt") else \
        "prompt_outputs_failed_validation"
    details = "\n".join(f"{e['type']}: {e['details']}" for entry in node_errors.values() for e in entry["errors"])
    return {"error": {"type": kind, "message": whole.message if whole else "Prompt outputs failed validation",
                      "details": details, "extra_info": {}}, "node_errors": node_errors}


# Loader nodes the web UI's model library looks up by name when it starts, and fails on when a
# server lacks them (frontend 1.27, modelToNodeStore). Where run-graph has none, the UI gets a
# deprecated (hidden) entry; a prompt using one is still refused by validation, by name.
FRONTEND_EXPECTED = {"ImageOnlyCheckpointLoader": ("ckpt_name", ["MODEL", "CLIP_VISION", "VAE"]),
                     "ControlNetLoader": ("control_net_name", ["CONTROL_NET"]),
                     "StyleModelLoader": ("style_model_name", ["STYLE_MODEL"]),
                     "GLIGENLoader": ("gligen_name", ["GLIGEN"])}


def _frontend_expected(have: dict) -> dict:
    return {name: {"name": name, "display_name": name, "category": "unavailable in run-graph",
                   "description": "not available in run-graph yet", "deprecated": True,
                   "input": {"required": {key: [[], {}]}, "optional": {}},
                   "input_order": {"required": [key], "optional": []}, "output": outputs,
                   "output_name": outputs, "output_is_list": [False] * len(outputs), "output_node": False,
                   "python_module": "nodes"}
            for name, (key, outputs) in FRONTEND_EXPECTED.items() if name not in have}


class _Listing:
    """What a widget's `choices(vctx)` reads: the settings (model and input folders)."""

    def __init__(self, settings: Any):
        self.settings = settings


def _comfy_input(spec: Any, listing: _Listing) -> list:
    """ComfyUI's object_info form of an input: `[TYPE, {options}]`, or `[[choices], {options}]`
    for combos, their file lists read now (the web UI shows them as they are)."""
    options = spec.to_info()
    kind = options.pop("type")
    options.pop("options", None)
    options.update(spec.ui or {})
    lister = spec.ui_choices or (spec.choices if callable(spec.choices) else None)
    choices = list(lister(listing)) if lister else list(spec.choices) if isinstance(spec.choices, tuple) else None
    if choices is not None:
        return [choices, options]
    return [kind, options] if options else [kind]


def _comfy_type(error: Any) -> str:
    if error.kind != "invalid_input":
        return error.kind
    if "< min" in error.message:
        return "value_smaller_than_min"
    if "> max" in error.message:
        return "value_bigger_than_max"
    return "value_not_in_list" if "not among the choices" in error.message else "invalid_input_type"


def _warm_up() -> None:
    try:
        import safetensors.torch  # noqa: F401 - and torch with it
    except ImportError:
        pass


def create_app(session: Any, state_path: Path, *, token: str | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES) -> web.Application:
    """The server over `session`; the worker starts and stops with the app. A request body over
    `max_upload_bytes` gets 413."""
    store = TaskStore(state_path)
    hub = Hub()
    worker = PromptWorker(session, store, hub.send, hub.send_binary)
    routes = Routes(session, store, worker, hub, max_upload_bytes)
    frontend = FrontendRoutes(state_path.parent, session.settings)
    app = web.Application(client_max_size=max_upload_bytes, middlewares=[_guard(token)])
    for method, path, handler in routes.table() + frontend.table():
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)
    for method, path, handler in frontend.internal_table():
        app.router.add_route(method, path, handler)
    add_frontend(app, frontend.root)

    async def started(app: web.Application) -> None:
        hub.loop = asyncio.get_running_loop()
        # The first prompt's validation would otherwise pay for importing torch (seconds).
        await hub.loop.run_in_executor(None, _warm_up)
        worker.start()

    async def stopping(app: web.Application) -> None:
        worker.interrupt()
        worker.stop()
        await asyncio.get_running_loop().run_in_executor(None, worker.join, 30)
        for socket in list(hub.sockets.values()):
            await socket.close()
        store.close()

    app.on_startup.append(started)
    app.on_shutdown.append(stopping)
    app[STORE], app[WORKER] = store, worker
    return app
