"""One thread runs the queued prompts in order through one Session and speaks ComfyUI's
WebSocket protocol about them.

Messages for a prompt go to its `client_id`: execution_start, execution_cached, executing,
progress, executed, then execution_success (or execution_error / execution_interrupted). A
prompt without a client id gets only the broadcast ones. The end of a run is ComfyUI's:
executed → execution_success → status → executing {node: null}, the history written before.
Images a node sends (SaveImageWebsocket) go as binary PREVIEW_IMAGE frames.
"""
from __future__ import annotations

import logging
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..node import SavedFiles, ShownText
from .store import TaskStore

log = logging.getLogger("run_graph.server")
Send = Callable[[str, dict, "str | None"], None]  # (type, data, client id or None for everyone)


def _now_ms() -> int:
    return int(time.time() * 1000)


class PromptWorker(threading.Thread):
    def __init__(self, session: Any, store: TaskStore, send: Send,
                 send_binary: Callable[[bytes, "str | None"], None] = lambda frame, client: None):
        super().__init__(name="run-graph-worker", daemon=True)
        self.session, self.store, self.send, self.send_binary = session, store, send, send_binary
        self.current: tuple[str, str | None] | None = None  # (prompt id, client id) while running
        self.last_node: str | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        with self.store.changed:
            self.store.changed.notify_all()

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt: any, or only the one with this id."""
        if self.current is not None and prompt_id in (None, self.current[0]):
            self.session.cancel()

    def status(self) -> dict:
        return {"status": {"exec_info": {"queue_remaining": self.store.remaining()}}}

    def run(self) -> None:
        while not self._stopping.is_set():
            task = self.store.take(timeout_s=0.5)
            if task is not None:
                try:
                    self._run(task)
                except Exception:  # noqa: BLE001 - one prompt's failure never stops the server
                    log.exception("prompt %s failed outside the engine", task[1])
                    self.store.finish(task[1], _history(task, {}, "error", []))
                finally:
                    self.current = None

    def _run(self, task: list) -> None:
        _, prompt_id, prompt, extra_data, outputs = task
        client = extra_data.get("client_id")
        self.current = (prompt_id, client)
        messages: list = []
        files: dict[str, list[str]] = {}
        ui: dict[str, dict] = {}

        def emit(kind: str, data: dict, to_all_without_client: bool = False, in_history: bool = False) -> None:
            data = {**data, "prompt_id": prompt_id}
            if in_history:
                messages.append([kind, data])
            if client is not None:
                self.send(kind, data, client)
            elif to_all_without_client:
                self.send(kind, data, None)

        def on_event(kind: str, data: dict) -> None:
            if kind == "run_start":
                emit("execution_start", {"timestamp": _now_ms()}, in_history=True)
                emit("execution_cached", {"nodes": data["cached"], "timestamp": _now_ms()}, in_history=True)
            elif kind == "node_start":
                self.last_node = data["node_id"]
                emit("executing", {"node": data["node_id"], "display_node": data["node_id"]})
            elif kind == "progress":
                emit("progress", {"value": data["value"], "max": data["max"], "node": data["node_id"]},
                     to_all_without_client=True)
            elif kind == "preview_image":
                # ComfyUI's binary PREVIEW_IMAGE frame: event type 1, format 2 (PNG), the image
                self.send_binary(struct.pack(">II", 1, 2) + data["png"], client)
            elif kind == "file":
                files.setdefault(data["node_id"], []).append(data["path"])
            elif kind == "node_end" and data["node_id"] in files:
                ui[data["node_id"]] = self._images(files[data["node_id"]])
                emit("executed", {"node": data["node_id"], "display_node": data["node_id"],
                                  "output": ui[data["node_id"]]})

        self.session.on_event = on_event
        result = self.session.execute(prompt, outputs=outputs or None, allow_partial=bool(outputs),
                                      raise_on_error=False)
        for node_id, output in result.outputs.items():  # cached output nodes show their files too
            if isinstance(output, SavedFiles) and node_id not in ui and output.files:
                ui[node_id] = self._images(output.files)
                emit("executed", {"node": node_id, "display_node": node_id, "output": ui[node_id]})
            elif isinstance(output, ShownText):
                ui[node_id] = {"text": list(output.text)}
                emit("executed", {"node": node_id, "display_node": node_id, "output": ui[node_id]})
        # Validation problems elsewhere in the prompt were reported when it was queued; what
        # counts here is that every output it was queued for ran.
        ran = result.status == "ok" or (result.status == "invalid" and outputs
                                        and all(o in result.outputs for o in outputs))
        if ran:
            emit("execution_success", {"timestamp": _now_ms()}, in_history=True)
            status = "success"
        elif any(e.kind == "cancelled" for e in result.errors):
            self.send("execution_interrupted", {"prompt_id": prompt_id, "node_id": self.last_node,
                                                "node_type": None, "executed": result.executed,
                                                "timestamp": _now_ms()}, None)
            messages.append(["execution_interrupted", {"prompt_id": prompt_id, "timestamp": _now_ms()}])
            status = "error"
        else:
            error = result.errors[0] if result.errors else None
            emit("execution_error", {
                "node_id": error.node_id if error else None, "node_type": error.node_type if error else None,
                "executed": result.executed, "exception_message": error.message if error else "",
                "exception_type": error.kind if error else "", "traceback": [], "current_inputs": {},
                "current_outputs": {}, "timestamp": _now_ms()}, in_history=True)
            status = "error"
        self.store.finish(prompt_id, _history(task, ui, status, messages))
        self.send("status", self.status(), None)
        if client is not None:
            self.send("executing", {"node": None, "prompt_id": prompt_id}, client)

    def _images(self, paths: list[str]) -> dict:
        root = self.session.settings.output_dir.resolve()
        images = []
        for path in paths:
            relative = Path(path).resolve().relative_to(root)
            subfolder = "" if relative.parent == Path(".") else relative.parent.as_posix()
            images.append({"filename": relative.name, "subfolder": subfolder, "type": "output"})
        return {"images": images}


def _history(task: list, outputs: dict, status: str, messages: list) -> dict:
    extra = {k: v for k, v in task[3].items() if k not in ("auth_token_comfy_org", "api_key_comfy_org")}
    return {"prompt": [task[0], task[1], task[2], extra, task[4]], "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages},
            "meta": {node: {"node_id": node, "display_node": node, "parent_node": None, "real_node_id": node}
                     for node in outputs}}
