"""What the ComfyUI web UI needs beyond the prompt API: its static files (the
`comfyui-frontend-package` wheel, extra `[ui]`) and the routes it calls on start-up — users,
settings, user data files, extensions, i18n, model folders — for one local user.

User data lives under `<state dir>/users/default/` (settings in `comfy.settings.json`, saved
workflows in `workflows/`), never outside it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from ..atomic import atomic_write
from ..settings import Settings, UnsafePathError

SETTINGS_FILE = "comfy.settings.json"
# A first visit stores these: frontend 1.27's navigation-mode setting writes the two others while
# they are not registered yet, which fails in the page unless they already hold these values.
FIRST_SETTINGS = {"Comfy.Canvas.NavigationMode": "legacy", "Comfy.Canvas.LeftMouseClickBehavior": "panning",
                  "Comfy.Canvas.MouseWheelScroll": "zoom",
                  # no "get started with a template" dialog: run-graph ships no template browser
                  "Comfy.TutorialCompleted": True}


def frontend_root() -> Path | None:
    """The web UI's files, when `comfyui-frontend-package` is installed."""
    try:
        import importlib.resources

        import comfyui_frontend_package
    except ImportError:
        return None
    root = Path(str(importlib.resources.files(comfyui_frontend_package) / "static"))
    return root if (root / "index.html").is_file() else None


class FrontendRoutes:
    def __init__(self, state_dir: Path, settings: Settings):
        self.user_dir = state_dir / "users" / "default"
        self.settings = settings
        self.root = frontend_root()
        for folder in ("workflows", "subgraphs"):  # listed at every start of the page
            (self.user_dir / folder).mkdir(parents=True, exist_ok=True)

    def table(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", "/users", self.users), ("GET", "/settings", self.get_settings),
            ("POST", "/settings", self.post_settings), ("GET", "/settings/{id}", self.get_setting),
            ("POST", "/settings/{id}", self.post_setting), ("GET", "/userdata", self.list_userdata),
            ("GET", "/userdata/{file}", self.get_userdata), ("POST", "/userdata/{file}", self.post_userdata),
            ("DELETE", "/userdata/{file}", self.delete_userdata),
            ("POST", "/userdata/{file}/move/{dest}", self.move_userdata),
            ("GET", "/extensions", self.extensions), ("GET", "/i18n", self.i18n),
            ("GET", "/workflow_templates", self.workflow_templates), ("GET", "/experiment/models", self.model_folders),
        ]

    def internal_table(self) -> list[tuple[str, str, Any]]:
        """The frontend's `/internal` calls (no `/api` prefix): the log panel and folder paths."""
        return [("GET", "/internal/logs", self.logs), ("GET", "/internal/logs/raw", self.raw_logs),
                ("PATCH", "/internal/logs/subscribe", self.subscribe_logs),
                ("GET", "/internal/folder_paths", self.folder_paths)]

    # -- users and settings ---------------------------------------------------------------------

    async def users(self, request: web.Request) -> web.Response:
        return web.json_response({"storage": "server", "migrated": True})

    def _settings(self) -> dict:
        try:
            return json.loads((self.user_dir / SETTINGS_FILE).read_text())
        except FileNotFoundError:
            return dict(FIRST_SETTINGS)
        except (OSError, ValueError):
            return {}

    def _save_settings(self, values: dict) -> None:
        self.user_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(values, indent=4)
        atomic_write(self.user_dir / SETTINGS_FILE, lambda handle: handle.write(text.encode()))

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(self._settings())

    async def post_settings(self, request: web.Request) -> web.Response:
        body = await _json(request)
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="settings must be a JSON object")
        self._save_settings({**self._settings(), **body})
        return web.Response(status=200)

    async def get_setting(self, request: web.Request) -> web.Response:
        return web.json_response(self._settings().get(request.match_info["id"]))

    async def post_setting(self, request: web.Request) -> web.Response:
        self._save_settings({**self._settings(), request.match_info["id"]: await _json(request)})
        return web.Response(status=200)

    # -- user data files ------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        name = unquote(name)
        if not name or name.startswith("/") or ".." in Path(name).parts:
            raise web.HTTPBadRequest(text="the path leaves the user folder")
        try:
            return self.settings.contained_path(self.user_dir, name, "user data file")
        except UnsafePathError:
            raise web.HTTPForbidden() from None

    async def list_userdata(self, request: web.Request) -> web.Response:
        folder = self._path(request.query.get("dir", "") or ".")
        if not folder.is_dir():
            raise web.HTTPNotFound()
        recurse = request.query.get("recurse", "").lower() == "true"
        files = sorted(p for p in (folder.rglob("*") if recurse else folder.iterdir()) if p.is_file())
        full_info = request.query.get("full_info", "").lower() == "true"
        split = request.query.get("split", "true").lower() != "false"
        out = []
        for path in files:
            relative = path.relative_to(folder).as_posix()
            if full_info:
                stat = path.stat()
                out.append({"path": relative, "size": stat.st_size, "modified": stat.st_mtime,
                            "created": stat.st_ctime})
            else:
                out.append([relative, *relative.split("/")] if split else relative)
        return web.json_response(out)

    async def get_userdata(self, request: web.Request) -> web.StreamResponse:
        path = self._path(request.match_info["file"])
        if path.is_file():
            return web.FileResponse(path)
        # files the page always asks for: empty ones spare the console a 404 at every start
        if path.name == "user.css":
            return web.Response(text="", content_type="text/css")
        if path.name == "comfy.templates.json":
            return web.json_response([])
        raise web.HTTPNotFound()

    async def post_userdata(self, request: web.Request) -> web.Response:
        path = self._path(request.match_info["file"])
        if request.query.get("overwrite", "true").lower() == "false" and path.exists():
            return web.Response(status=409)
        data = await request.read()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: handle.write(data))
        return web.json_response(self._info(path, request))

    def _info(self, path: Path, request: web.Request):
        relative = path.relative_to(self.user_dir.resolve()).as_posix()
        if request.query.get("full_info", "").lower() != "true":
            return relative
        stat = path.stat()
        return {"path": relative, "size": stat.st_size, "modified": stat.st_mtime, "created": stat.st_ctime}

    async def delete_userdata(self, request: web.Request) -> web.Response:
        path = self._path(request.match_info["file"])
        if not path.is_file():
            raise web.HTTPNotFound()
        path.unlink()
        return web.Response(status=204)

    async def move_userdata(self, request: web.Request) -> web.Response:
        source, dest = self._path(request.match_info["file"]), self._path(request.match_info["dest"])
        if not source.is_file():
            raise web.HTTPNotFound()
        if dest.exists() and request.query.get("overwrite", "true").lower() == "false":
            return web.Response(status=409)
        dest.parent.mkdir(parents=True, exist_ok=True)
        source.replace(dest)
        return web.json_response(self._info(dest, request))

    # -- discovery ------------------------------------------------------------------------------

    async def extensions(self, request: web.Request) -> web.Response:
        if self.root is None:
            return web.json_response([])
        core = sorted((self.root / "extensions").rglob("*.js"))
        return web.json_response(["/" + p.relative_to(self.root).as_posix() for p in core])

    async def i18n(self, request: web.Request) -> web.Response:
        return web.json_response({})  # node packs' translations; run-graph's nodes use their own names

    async def workflow_templates(self, request: web.Request) -> web.Response:
        return web.json_response({})

    def _model_folders(self) -> dict[str, list[str]]:
        root = self.settings.models_dir
        names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        return {name: [str(root / name)] for name in names}

    async def model_folders(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": name, "folders": paths} for name, paths in self._model_folders().items()])


    # -- /internal ------------------------------------------------------------------------------

    async def logs(self, request: web.Request) -> web.Response:
        return web.json_response("")  # run-graph logs to its own stderr, not to the page

    async def raw_logs(self, request: web.Request) -> web.Response:
        return web.json_response({"entries": [], "size": {"cols": 80, "rows": 24}})

    async def subscribe_logs(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def folder_paths(self, request: web.Request) -> web.Response:
        return web.json_response(self._model_folders())


async def _json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None


def add_frontend(app: web.Application, root: Path | None) -> None:
    """`/` serves the web UI (or says how to get it); its files are served from the root. Added
    after every API route, so those win."""
    async def index(request: web.Request) -> web.StreamResponse:
        if root is None:
            return web.Response(text="run-graph serve: ComfyUI's API is here. For the web UI, "
                                     "pip install 'run-graph[ui]' (comfyui-frontend-package).\n")
        response = web.FileResponse(root / "index.html")
        response.headers["Cache-Control"] = "no-cache"
        return response

    async def user_css(request: web.Request) -> web.Response:
        return web.Response(text="", content_type="text/css")

    async def favicon(request: web.Request) -> web.Response:
        return web.Response(status=204)  # browsers ask; the frontend package has none

    async def templates_index(request: web.Request) -> web.Response:
        return web.json_response([])  # no workflow-templates package: an empty template browser

    app.router.add_get("/", index)
    app.router.add_get("/user.css", user_css)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/templates/index.json", templates_index)
    if root is not None:
        app.router.add_static("/", root, follow_symlinks=False)
