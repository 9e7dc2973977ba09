"""`run-graph serve` on loopback: ComfyUI's prompt/queue/history/view/ws flow on the tiny models,
validation errors in ComfyUI's shape, clean 4xx answers, the queue and history across restarts."""
import asyncio
import json
import socket
import threading
import uuid
from pathlib import Path

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from engine import Session, Settings  # noqa: E402
from engine.server.app import WORKER, create_app  # noqa: E402
from engine.server.store import TaskStore  # noqa: E402

from .kolors_graphs import txt2img  # noqa: E402


class Running:
    """A server on 127.0.0.1 in a thread of its own, for one test."""

    def __init__(self, session: Session, state: Path, token: str | None = None, **options):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(create_app(session, state, token=token, **options))
        ready = threading.Event()

        def serve():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture
def server(tiny_models, tmp_path):
    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path / "out", device="cpu",
                                        input_dir=tmp_path / "in", allow_absolute_model_paths=False))
    running = Running(session, tmp_path / "state.sqlite")
    yield running
    running.stop()


async def _queue_and_listen(url: str, prompt: dict) -> tuple[str, list]:
    """POST the prompt with a client id and collect that client's messages up to executing null."""
    client = uuid.uuid4().hex
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}/ws?clientId={client}") as ws:
            first = await ws.receive_json(timeout=10)
            async with http.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client}) as answer:
                assert answer.status == 200, await answer.text()
                prompt_id = (await answer.json())["prompt_id"]
            messages = [first]
            while True:
                message = await ws.receive_json(timeout=120)
                messages.append(message)
                data = message["data"]
                if message["type"] == "executing" and data["node"] is None and data.get("prompt_id") == prompt_id:
                    return prompt_id, messages


async def _get(url: str, path: str):
    async with aiohttp.ClientSession() as http:
        async with http.get(url + path) as answer:
            return answer.status, await answer.read()


def test_a_prompt_runs_with_comfyuis_messages_history_and_view(server):
    prompt = txt2img(steps=2)
    prompt_id, messages = asyncio.run(_queue_and_listen(server.url, prompt))
    kinds = [m["type"] for m in messages]
    # status on connect, status when the prompt is queued (both as ComfyUI), then the run
    assert kinds[:4] == ["status", "status", "execution_start", "execution_cached"]
    assert "progress" in kinds and kinds[-4:] == ["executed", "execution_success", "status", "executing"]
    executed = [m["data"] for m in messages if m["type"] == "executed"]
    images = executed[0]["output"]["images"]
    image = images[0]
    assert executed[0]["node"] == "3" and len(images) == 2  # "a cat|a dog": two images
    assert image["subfolder"] == "previews" and image["type"] == "output"
    status, body = asyncio.run(_get(server.url, f"/history/{prompt_id}"))
    item = json.loads(body)[prompt_id]
    assert item["status"]["status_str"] == "success" and item["outputs"]["3"]["images"][0] == image
    assert [m[0] for m in item["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    query = f"/api/view?filename={image['filename']}&subfolder=previews&type=output"
    status, png = asyncio.run(_get(server.url, query))
    written = Path(server.runner.app[WORKER].session.settings.output_dir) / "previews" / image["filename"]
    assert status == 200 and png == written.read_bytes()
    # The same prompt again: every node is cached, and the output node still shows its image.
    _, again = asyncio.run(_queue_and_listen(server.url, prompt))
    cached = next(m["data"]["nodes"] for m in again if m["type"] == "execution_cached")
    assert "3" in cached and [m["type"] for m in again][-4:] == ["executed", "execution_success", "status", "executing"]


def test_bad_prompts_get_comfyuis_400_shapes_and_the_server_stays_up(server):
    async def post(body) -> tuple[int, dict]:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/prompt", data=body if isinstance(body, bytes) else json.dumps(body)) as r:
                return r.status, json.loads(await r.read() or b"{}") if r.content_type == "application/json" else {}

    bad = txt2img(steps=0)
    status, answer = asyncio.run(post({"prompt": bad}))
    assert status == 400 and answer["error"]["type"] == "prompt_outputs_failed_validation"
    [error] = answer["node_errors"]["14"]["errors"]
    assert error["type"] == "value_smaller_than_min" and error["extra_info"]["input_name"] == "steps"
    assert answer["node_errors"]["14"]["class_type"] == "KolorsSampler"
    assert asyncio.run(post({"no": "prompt"}))[1]["error"]["type"] == "no_prompt"
    assert asyncio.run(post(b"{not json"))[0] == 400
    for path, expected in (("/view?filename=../../etc/passwd", 400), ("/view?filename=x.png&subfolder=../..", 403),
                           ("/view?filename=x.png&type=secret", 400), ("/view?filename=missing.png", 404),
                           ("/history/unknown", 200), ("/object_info/NoSuchNode", 200)):
        assert asyncio.run(_get(server.url, path))[0] == expected, path
    assert asyncio.run(_get(server.url, "/api/object_info/KolorsSampler"))[0] == 200
    assert asyncio.run(_get(server.url, "/prompt"))[0] == 200  # still serving


def test_a_loopback_server_refuses_a_foreign_origin_and_a_token_is_enforced(tiny_models, tmp_path):
    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path / "out", device="cpu"))
    running = Running(session, tmp_path / "state.sqlite", token="s3cret")

    async def status(headers: dict, query: str = "") -> int:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{running.url}/queue{query}", headers=headers) as answer:
                return answer.status

    try:
        assert asyncio.run(status({})) == 401
        assert asyncio.run(status({"Authorization": "Bearer s3cret"})) == 200
        assert asyncio.run(status({}, "?token=s3cret")) == 200
        assert asyncio.run(status({"Authorization": "Bearer s3cret", "Origin": "http://evil.example"})) == 403
    finally:
        running.stop()


def test_queue_and_history_survive_a_restart_and_the_running_prompt_runs_again(tmp_path):
    store = TaskStore(tmp_path / "state.sqlite")
    for number, prompt_id in ((2.0, "b"), (1.0, "a"), (3.0, "c")):
        store.enqueue(prompt_id, number, {"x": {}}, {}, [])
    assert store.take()[1] == "a"  # lowest number first
    store.finish("a", {"outputs": {}})
    assert store.take()[1] == "b"  # running when the server is killed
    store.close()
    again = TaskStore(tmp_path / "state.sqlite")
    assert list(again.history()) == ["a"] and [t[1] for t in again.tasks("pending")] == ["b", "c"]
    assert again.take()[1] == "b" and again.remaining() == 2
    again.delete("pending", ["c"])
    assert again.tasks("pending") == [] and again.next_number() == 4.0


def test_queue_and_history_can_be_cleared_and_pruned_over_http(server):
    async def post(path: str, body: dict) -> int:
        async with aiohttp.ClientSession() as http:
            async with http.post(server.url + path, json=body) as answer:
                return answer.status

    worker = server.runner.app[WORKER]
    worker.stop()  # nothing runs: the queue holds still while the routes change it
    worker.join(30)
    store = worker.store
    for prompt_id in ("old-1", "old-2"):
        store.enqueue(prompt_id, 0, {"x": {}}, {}, [])
        store.finish(prompt_id, {"outputs": {}})
    for prompt_id in ("p-1", "p-2", "p-3"):
        store.enqueue(prompt_id, 1, {"x": {}}, {}, [])
    assert asyncio.run(post("/history", {"delete": ["old-1"]})) == 200 and list(store.history()) == ["old-2"]
    assert asyncio.run(post("/api/history", {"clear": True})) == 200 and store.history() == {}
    assert asyncio.run(post("/queue", {"delete": ["p-2"]})) == 200
    assert [t[1] for t in store.tasks("pending")] == ["p-1", "p-3"]
    assert asyncio.run(post("/queue", {"clear": True})) == 200 and store.remaining() == 0


def test_a_prompt_with_one_broken_output_runs_the_other_and_reports_the_broken_one(server):
    """ComfyUI validates per output: the valid outputs run, the others come back in node_errors;
    partial_execution_targets limits both to the outputs asked for."""
    prompt = txt2img(steps=1)
    prompt["90"] = {"class_type": "PreviewImage", "inputs": {"images": ["91", 0]}}
    prompt["91"] = {"class_type": "VAEDecode", "inputs": {"samples": ["nope", 0], "vae": ["10", 0]}}

    async def post(body) -> tuple[int, dict]:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/prompt", json=body) as answer:
                return answer.status, await answer.json()

    status, answer = asyncio.run(post({"prompt": prompt}))
    assert status == 200 and set(answer["node_errors"]) == {"91"}
    status, answer = asyncio.run(post({"prompt": prompt, "partial_execution_targets": ["3"]}))
    assert status == 200 and answer["node_errors"] == {}
    status, answer = asyncio.run(post({"prompt": prompt, "partial_execution_targets": ["90"]}))
    assert status == 400 and set(answer["node_errors"]) == {"91"}
    prompt_id, messages = asyncio.run(_queue_and_listen(server.url, prompt))
    assert [m["type"] for m in messages][-4:] == ["executed", "execution_success", "status", "executing"]


def test_mask_upload_puts_the_masks_alpha_on_the_original_and_oversized_bodies_get_413(tiny_models, tmp_path):
    import io

    import numpy as np
    from PIL import Image, PngImagePlugin

    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path / "out", device="cpu",
                                        input_dir=tmp_path / "in"))
    running = Running(session, tmp_path / "state.sqlite", max_upload_bytes=64 * 1024)

    def png(array, text=None) -> bytes:
        info = PngImagePlugin.PngInfo()
        for key, value in (text or {}).items():
            info.add_text(key, value)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()

    async def upload(path: str, fields: dict) -> tuple[int, dict]:
        form = aiohttp.FormData()
        for key, value in fields.items():
            if isinstance(value, bytes):
                form.add_field(key, value, filename="picture.png", content_type="image/png")
            else:
                form.add_field(key, value)
        async with aiohttp.ClientSession() as http:
            async with http.post(running.url + path, data=form) as answer:
                return answer.status, (await answer.json()) if answer.content_type == "application/json" else {}

    try:
        rgb = np.full((8, 8, 3), 200, np.uint8)
        status, first = asyncio.run(upload("/upload/image", {"image": png(rgb, {"prompt": "{}"})}))
        assert status == 200 and first == {"name": "picture.png", "subfolder": "", "type": "input"}
        alpha = np.zeros((8, 8, 4), np.uint8)
        alpha[..., 3] = 255
        alpha[2:6, 2:6, 3] = 0
        ref = json.dumps({"filename": "picture.png", "subfolder": "", "type": "input"})
        status, masked = asyncio.run(upload("/upload/mask", {"image": png(alpha), "original_ref": ref}))
        assert status == 200 and masked["name"] == "picture (1).png"
        with Image.open(tmp_path / "in" / masked["name"]) as result:
            pixels = np.asarray(result)
            assert result.mode == "RGBA" and result.text["prompt"] == "{}"
        assert (pixels[..., :3] == 200).all() and (pixels[..., 3] == alpha[..., 3]).all()
        bad_ref = json.dumps({"filename": "../state.sqlite", "type": "input"})
        assert asyncio.run(upload("/upload/mask", {"image": png(alpha), "original_ref": bad_ref}))[0] == 400
        noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)  # ~200 KB as PNG
        assert asyncio.run(upload("/upload/image", {"image": png(noise)}))[0] == 413
        assert asyncio.run(_get(running.url, "/features"))[0] == 200
    finally:
        running.stop()


def test_the_web_uis_start_up_routes_answer(server):
    """What the 1.27 frontend calls before and while it draws: each answers, none 404s."""
    for path in ("/api/users", "/api/settings", "/api/i18n", "/api/extensions", "/api/workflow_templates",
                 "/api/experiment/models", "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true",
                 "/api/userdata?dir=subgraphs&recurse=true&split=false&full_info=true",
                 "/api/userdata/comfy.templates.json", "/api/userdata/user.css", "/internal/logs/raw",
                 "/internal/folder_paths", "/templates/index.json", "/"):
        status, _ = asyncio.run(_get(server.url, path))
        assert status == 200, path
    assert json.loads(asyncio.run(_get(server.url, "/api/settings"))[1])["Comfy.TutorialCompleted"] is True
    assert asyncio.run(_get(server.url, "/api/userdata/..%2Fstate.sqlite"))[0] in (400, 403)
    info = json.loads(asyncio.run(_get(server.url, "/object_info/KSampler"))[1])["KSampler"]
    assert info["input"]["required"]["steps"] == ["INT", {"min": 1, "max": 10000, "default": 20}]
    assert info["input"]["required"]["sampler_name"][0][0] == "euler"


def test_save_image_websocket_sends_pngs_as_binary_frames_to_its_client(server, tmp_path):
    import io
    import struct

    import numpy as np
    from PIL import Image

    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": 0x3366CC}},
              "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}

    async def run():
        import aiohttp

        client = uuid.uuid4().hex
        frames, messages = [], []
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"{server.url}/ws?clientId={client}") as ws:
                await ws.receive_json(timeout=10)
                for _ in range(2):  # it runs every time: never from the cache
                    async with http.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": client}) as r:
                        prompt_id = (await r.json())["prompt_id"]
                    while True:
                        message = await ws.receive(timeout=60)
                        if message.type == aiohttp.WSMsgType.BINARY:
                            frames.append(message.data)
                            continue
                        data = json.loads(message.data)
                        messages.append(data["type"])
                        if data["type"] == "executing" and data["data"]["node"] is None \
                                and data["data"]["prompt_id"] == prompt_id:
                            break
        return frames, messages

    frames, messages = asyncio.run(run())
    assert len(frames) == 4 and "progress" in messages
    for frame in frames:
        assert struct.unpack(">II", frame[:8]) == (1, 2)
        image = np.asarray(Image.open(io.BytesIO(frame[8:])))
        assert image.shape == (8, 16, 3) and tuple(image[0, 0]) == (0x33, 0x66, 0xCC)
    assert not any((tmp_path / "out").rglob("*.png"))


def test_preview_any_shows_its_text_in_executed_and_history(server):
    prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 42}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
              "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
              "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}}
    prompt_id, messages = asyncio.run(_queue_and_listen(server.url, prompt))
    shown = {m["data"]["node"]: m["data"]["output"] for m in messages if m["type"] == "executed"}
    assert shown["2"] == {"text": ["42"]}
    assert shown["4"]["text"][0].startswith("{'samples': tensor(")  # str() of ComfyUI's LATENT dict
    _, body = asyncio.run(_get(server.url, f"/history/{prompt_id}"))
    assert json.loads(body)[prompt_id]["outputs"]["2"] == {"text": ["42"]}
