"""Real client flows against `run-graph serve` on loopback, on the tiny SD1.5 checkpoint:
ComfyUI's own websocket example script, ten concurrent clients, and a SIGKILL mid-queue."""
from __future__ import annotations

import json
import signal
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")
websocket = pytest.importorskip("websocket")

from engine import Session, Settings  # noqa: E402
from engine.atomic import TEMP_PREFIX  # noqa: E402
from engine.server.app import WORKER  # noqa: E402

from .sd_graphs import sd15_txt2img  # noqa: E402
from .server_load import run_load, serve_process  # noqa: E402
from .test_server import Running  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sd_server(tiny_models, tmp_path):
    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path / "out", device="cpu",
                                        input_dir=tmp_path / "in"))
    running = Running(session, tmp_path / "state.sqlite")
    yield running
    running.stop()


def _post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _get(url: str, path: str) -> bytes:
    with urllib.request.urlopen(url + path, timeout=30) as answer:
        return answer.read()


def test_comfyuis_websocket_example_flow(sd_server):
    """What ComfyUI's script_examples/websockets_api_example.py does, with websocket-client."""
    client_id = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.connect(f"ws://127.0.0.1:{sd_server.port}/ws?clientId={client_id}", timeout=120)
    prompt = sd15_txt2img(seed=5)

    def run() -> tuple[str, list]:
        prompt_id = _post(sd_server.url, "/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]
        messages = []
        while True:
            out = ws.recv()
            if not isinstance(out, str):
                continue  # binary previews
            message = json.loads(out)
            messages.append((message["type"], message["data"]))
            if message["type"] == "executing" and message["data"]["node"] is None \
                    and message["data"].get("prompt_id") == prompt_id:
                return prompt_id, messages

    prompt_id, messages = run()
    kinds = [kind for kind, _ in messages]
    order = [kinds.index(k) for k in ("execution_start", "execution_cached", "executing", "progress", "executed",
                                      "execution_success")]
    assert order == sorted(order) and kinds[-1] == "executing"
    progress = [data for kind, data in messages if kind == "progress"]
    assert progress[-1]["value"] == progress[-1]["max"] == 2 and progress[-1]["prompt_id"] == prompt_id
    history = json.loads(_get(sd_server.url, f"/history/{prompt_id}"))[prompt_id]
    images = [image for output in history["outputs"].values() for image in output.get("images", [])]
    assert len(images) == 1
    query = urllib.parse.urlencode({"filename": images[0]["filename"], "subfolder": images[0]["subfolder"],
                                    "type": images[0]["type"]})
    png = _get(sd_server.url, f"/view?{query}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out = Path(sd_server.runner.app[WORKER].session.settings.output_dir)
    assert png == (out / images[0]["subfolder"] / images[0]["filename"]).read_bytes()
    # again: every node comes from the cache, and ComfyUI says so
    _, again = run()
    cached = next(data["nodes"] for kind, data in again if kind == "execution_cached")
    assert set(cached) == set(prompt)
    ws.close()


def test_ten_clients_fifty_prompts_each_get_one_history_entry_and_their_files(sd_server):
    result = run_load(sd_server.url, clients=10, prompts=5)
    history = result["history"]
    assert len(result["ids"]) == len(set(result["ids"])) == 50
    assert sum(1 for i in result["ids"] if i in history) == 50
    out = Path(sd_server.runner.app[WORKER].session.settings.output_dir)
    files = []
    for prompt_id in result["ids"]:
        item = history[prompt_id]
        assert item["status"]["status_str"] == "success"
        files += [image["filename"] for output in item["outputs"].values() for image in output["images"]]
    assert len(files) == len(set(files)) == 50
    assert {p.name for p in out.glob("load_*.png")} == set(files)
    print(f"POST /prompt while jobs run: p50 {1000 * result['p50']:.1f} ms, p99 {1000 * result['p99']:.1f} ms")


def test_sigkill_with_prompts_pending_then_restart_runs_them_all(tiny_models, tmp_path):
    out = tmp_path / "out"
    server, url = serve_process(tiny_models, out)
    port = int(url.rsplit(":", 1)[1])
    try:
        ids = [_post(url, "/prompt", {"prompt": sd15_txt2img(seed=s, steps=12, size=128, prefix="killed")})["prompt_id"]
               for s in range(4)]
        deadline = time.monotonic() + 120
        while not json.loads(_get(url, "/history")) and time.monotonic() < deadline:
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)  # one done, one running, two pending
        server.wait(30)
        server, _ = serve_process(tiny_models, out, port)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            history = json.loads(_get(url, "/history"))
            if all(i in history for i in ids):
                break
            time.sleep(0.25)
        assert sorted(history) == sorted(ids)
        assert all(history[i]["status"]["status_str"] == "success" for i in ids)
        assert not json.loads(_get(url, "/queue"))["queue_pending"]
    finally:
        server.kill()
        server.wait(30)
    # every image is whole; a kill mid-write can only ever leave a `.tmp-` file, never a partial PNG
    written = sorted(out.glob("killed_*.png"))
    assert len(written) >= 4 and all(p.name.startswith(TEMP_PREFIX) for p in out.rglob("*.png") if p not in written)
    from PIL import Image

    for path in written:
        with Image.open(path) as image:
            image.verify()
