"""ComfyUI's lists (§2.5 of the execution notes): a node runs once per item, whole-list nodes
once, list slots joined; and the Rebatch nodes that turn batches into lists and back."""
from __future__ import annotations

import pytest

from engine import ItemList, Session, Settings
from engine.disk_cache import decode, encode

from . import toy_nodes
from .toy_nodes import CALLS, api


def test_a_node_runs_once_per_item_and_a_whole_list_node_once(toy_session):
    graph = api(("1", "Range", {"count": 3}),
                ("2", "Scale", {"x": ["1", 0], "factor": 2.0}),
                ("3", "Total", {"x": ["2", 0], "factor": 10.0}),
                ("4", "Record", {"x": ["3", 0]}))
    result = toy_session.execute(graph)
    assert CALLS == ["Range", "Scale", "Scale", "Scale", "Total", "Record"]
    assert [n.value for n in result.outputs["2"].number] == [0.5, 2.5, 4.5]
    assert isinstance(result.outputs["2"].number, ItemList)
    assert toy_nodes.Record.RESULTS == [75.0]  # (0.5 + 2.5 + 4.5) × 10, the widget a list of one


def test_a_shorter_list_repeats_its_last_item(toy_session):
    graph = api(("1", "Range", {"count": 3}), ("2", "Range", {"count": 2}),
                ("3", "Add", {"a": ["1", 0], "b": ["2", 0]}),
                ("4", "Total", {"x": ["3", 0]}), ("5", "Record", {"x": ["4", 0]}))
    result = toy_session.execute(graph)
    assert [n.value for n in result.outputs["3"].number] == [0.0, 2.0, 3.0]
    assert result.outputs["4"].number.value == 5.0


def test_an_output_node_runs_per_item_and_its_files_are_joined(toy_session):
    graph = api(("1", "Range", {"count": 2}), ("2", "Record", {"x": ["1", 0], "name": "each"}))
    result = toy_session.execute(graph)
    assert toy_nodes.Record.RESULTS == [0.0, 1.0]
    assert len(result.outputs["2"].files) == 2 and len(result.outputs["2"].stamps) == 2


def test_a_list_of_one_is_the_item_itself(toy_session):
    result = toy_session.execute(api(("1", "Range", {"count": 1}), ("2", "Record", {"x": ["1", 0]})))
    assert not isinstance(result.outputs["1"].number, ItemList) and result.outputs["1"].number.value == 0.0
    assert toy_nodes.Record.RESULTS == [0.0]


def test_an_empty_list_is_an_error_on_the_node_given_it(toy_session):
    result = toy_session.execute(api(("1", "Range", {"count": 0}), ("2", "Scale", {"x": ["1", 0]}),
                                     ("3", "Record", {"x": ["2", 0]})), raise_on_error=False)
    assert result.status == "failed"
    [error] = result.errors
    assert (error.node_id, error.node_type) == ("2", "Scale") and "x is an empty list" in error.message


def test_lists_are_cached_in_memory_and_on_disk(tmp_path):
    import torch

    graph = api(("1", "Range", {"count": 3}), ("2", "Scale", {"x": ["1", 0]}), ("3", "Total", {"x": ["2", 0]}),
                ("4", "Record", {"x": ["3", 0]}))
    settings = Settings(output_dir=tmp_path / "out", models_dir=tmp_path / "models", cache_dir=tmp_path / "cache")
    Session(toy_nodes.registry(), settings).execute(graph)
    assert toy_nodes.Record.RESULTS[-1] == 7.5
    CALLS.clear()
    Session(toy_nodes.registry(), settings).execute(graph)  # a new process: the disk cache
    assert CALLS == []
    graph["3"]["inputs"]["factor"] = 2.0  # Total again, on the list read back from disk
    Session(toy_nodes.registry(), settings).execute(graph)
    assert CALLS == ["Total", "Record"] and toy_nodes.Record.RESULTS[-1] == 15.0
    tensors: dict = {}
    listed = toy_nodes.NumberOut(ItemList([toy_nodes.Number(torch.ones(2)), toy_nodes.Number(torch.zeros(1))]))
    restored = decode(encode(listed, tensors), tensors, {f"{c.__module__}:{c.__qualname__}": c
                                                         for c in (toy_nodes.NumberOut, toy_nodes.Number)})
    assert isinstance(restored.number, ItemList) and [len(n.value) for n in restored.number] == [2, 1]


def test_object_info_says_which_outputs_are_lists():
    from engine import default_registry

    assert toy_nodes.Range.spec.to_info()["output_is_list"] == [True]
    registry = default_registry()
    assert registry.spec("RebatchImages").to_info()["output_is_list"] == [True]
    assert registry.spec("KSampler").to_info()["output_is_list"] == [False]


@pytest.fixture
def session(tiny_models, tmp_path):
    return Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path / "out", device="cpu"), cache=False)


def _pixels(path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path)).astype(int)


def test_rebatched_images_run_per_item_and_come_back_as_one_batch(session):
    """ComfyUI's test_mixed_lazy_results, with core nodes: a batch of three greys becomes a list
    of three, each item is inverted on its own, and a rebatch joins them for one save of 3."""
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x808080}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0xFFFFFF}},
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "5": {"class_type": "ImageBatch", "inputs": {"image1": ["4", 0], "image2": ["3", 0]}},
        "6": {"class_type": "RebatchImages", "inputs": {"images": ["5", 0], "batch_size": 1}},
        "7": {"class_type": "ImageInvert", "inputs": {"image": ["6", 0]}},
        "8": {"class_type": "RebatchImages", "inputs": {"images": ["7", 0], "batch_size": 3}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "mixed"}},
    }
    result = session.execute(graph)
    inverted = result.outputs["7"].IMAGE
    assert isinstance(inverted, ItemList) and [image.pixels.shape[0] for image in inverted] == [1, 1, 1]
    assert result.outputs["8"].IMAGE.pixels.shape[0] == 3
    # 1 − 128/255 saves as 126: SaveImage truncates, as ComfyUI's astype(uint8) does
    assert [_pixels(f).mean() for f in result.files] == [255.0, 126.0, 0.0]
    # a rebatch by 2 of the three: a list of a pair and a single, each saved in its own run
    graph["8"]["inputs"]["batch_size"] = 2
    assert [image.pixels.shape[0] for image in session.execute(graph).outputs["8"].IMAGE] == [2, 1]


def test_rebatched_latents_sample_as_the_batch_did(session):
    """A batch of 2 split into a list of two keeps each image's noise draw (batch_index), so
    KSampler once per item gives the batch's images."""
    import numpy as np

    def graph(latent):
        return {
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
            "10": {"class_type": "RebatchLatents", "inputs": {"latents": ["5", 0], "batch_size": 1}},
            "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 5, "steps": 3, "cfg": 5.0,
                                                       "sampler_name": "euler", "scheduler": "normal",
                                                       "denoise": 1.0, "positive": ["6", 0], "negative": ["7", 0],
                                                       "latent_image": latent}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "rebatch"}},
        }

    batched = [_pixels(f) for f in session.execute(graph(["5", 0])).files]
    result = session.execute(graph(["10", 0]))
    listed = [_pixels(f) for f in result.files]
    assert [latent.batch_index for latent in result.outputs["10"].LATENT] == [(0,), (1,)]
    assert len(listed) == 2 and np.abs(batched[0] - batched[1]).max() > 5
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(listed, batched))
