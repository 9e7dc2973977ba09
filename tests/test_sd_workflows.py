"""The shipped SD1.5/SDXL examples on the tiny checkpoints, through the CLI."""
import json
from pathlib import Path

import pytest

from engine.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL = {
    "sd15_txt2img": ["5.width=64", "5.height=64", "3.steps=3"],
    "sd15_img2img": ["3.steps=3"],
    "sd15_inpaint": ["3.steps=3"],
    "sd15_hires_fix": ["5.width=64", "5.height=64", "3.steps=3", "10.width=96", "10.height=96", "11.steps=3"],
    "sd15_area_composition": ["5.width=64", "5.height=128", "3.steps=3", "15.width=64", "15.height=64",
                              "16.width=64", "16.height=64", "16.y=64"],
    "sdxl_turbo": ["5.width=64", "5.height=64"],
    "sd15_upscale_model": ["5.width=64", "5.height=64", "3.steps=3"],
    "sd15_controlnet": ["5.width=64", "5.height=64", "3.steps=3"],
    "sdxl_base_refiner": ["5.width=64", "5.height=64", "10.steps=4", "11.steps=4", "10.end_at_step=3",
                          "11.start_at_step=3"],
}


def run(capsys, *args):
    code = main([*args, "--json", "-q"])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_example_runs_and_is_reproducible(name, tiny_models, tmp_path, capsys):
    from PIL import Image

    args = [str(EXAMPLES / f"{name}.json"), "--models-dir", str(tiny_models), "--input-dir", str(EXAMPLES / "input")]
    for item in SMALL[name]:
        args += ["--set", item]
    code, [first] = run(capsys, *args, "--output-dir", str(tmp_path / "a"))
    assert code == 0, first
    code, [again] = run(capsys, *args, "--output-dir", str(tmp_path / "b"), "--no-cache")
    assert code == 0 and [f["sha256"] for f in first["files"]] == [f["sha256"] for f in again["files"]]
    with Image.open(first["files"][0]["path"]) as image:
        assert image.size[0] >= 64 and json.loads(image.text["prompt"])


def test_examples_validate_as_saved(tiny_models, capsys):
    for name in SMALL:
        code, [report] = run(capsys, "--validate", str(EXAMPLES / f"{name}.json"), "--models-dir", str(tiny_models),
                             "--input-dir", str(EXAMPLES / "input"))
        assert code == 0, (name, report)
