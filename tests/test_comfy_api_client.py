"""comfy-api-simplified, a real ComfyUI client package, against `run-graph serve` on loopback:
the Kolors txt2img API prompt gives the CLI's pixels, and an uploaded image runs img2img."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

comfy_api = pytest.importorskip("comfy_api_simplified")

from engine.cli import main  # noqa: E402

from .kolors_graphs import txt2img  # noqa: E402
from .test_server_clients import sd_server  # noqa: E402,F401 - the fixture

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _titled(prompt: dict) -> dict:
    """API prompts exported from ComfyUI carry each node's title in `_meta`; the client finds
    output nodes by it."""
    titles = {"3": "Preview Image"}
    return {node_id: {**node, "_meta": {"title": titles.get(node_id, node["class_type"])}}
            for node_id, node in prompt.items()}


def _pixels(data: bytes):
    import io

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def test_comfy_api_simplified_gets_the_clis_pixels_and_runs_img2img_on_an_upload(sd_server, tiny_models, tmp_path,
                                                                                    capsys):
    api = comfy_api.ComfyApiWrapper(sd_server.url)
    prompt = _titled(txt2img(steps=2))
    images = api.queue_and_wait_images(comfy_api.ComfyWorkflowWrapper(prompt), "Preview Image")
    assert len(images) == 2  # "a cat|a dog"

    (tmp_path / "prompt.json").write_text(json.dumps(prompt))
    assert main([str(tmp_path / "prompt.json"), "--models-dir", str(tiny_models), "--output-dir",
                 str(tmp_path / "cli"), "--no-cache", "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    cli = [np.asarray(Image.open(f["path"]).convert("RGB")) for f in report["files"]]
    served = [_pixels(data) for _, data in sorted(images.items())]
    assert len(cli) == len(served) and all(np.array_equal(a, b) for a, b in zip(cli, served))

    uploaded = api.upload_image(EXAMPLES / "input" / "example.png")
    assert uploaded["name"] == "example.png" and uploaded["subfolder"] == "default_upload_folder"
    img2img = _titled(txt2img(steps=3, image=f"{uploaded['subfolder']}/{uploaded['name']}", strength=0.6))
    edited = api.queue_and_wait_images(comfy_api.ComfyWorkflowWrapper(img2img), "Preview Image")
    assert len(edited) == 2
    assert all(not np.array_equal(_pixels(a), b) for a, b in zip(edited.values(), served))
