"""SaveLatent and LoadLatent: latents as `.latent` safetensors files (ComfyUI's format: the
tensor under `latent_tensor`, a `latent_format_version_0` marker, the prompt as metadata)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from engine import Link, Node, SavedFiles, Widget
from engine.atomic import next_number, numbered

from ..types import Latent
from .image import _prefix_stays_inside, in_input_folder
from .latent import LatentOut

# Files without the marker are older: their latents were stored multiplied by SD's scale factor
OLD_FORMAT_SCALE = 0.18215


class SaveLatent(Node):
    """Save latents as a `.latent` file in the output folder, to load again with LoadLatent."""

    class_type = "SaveLatent"
    display_name = "SaveLatent"
    category = "_for_testing"
    is_output_node = True

    samples: Latent = Link()
    filename_prefix: str = Widget("latents/ComfyUI", check=_prefix_stays_inside)

    def execute(self, ctx) -> SavedFiles:
        import torch
        from safetensors.torch import save

        relative = Path(self.filename_prefix)
        folder = ctx.output_path(str(relative.parent))
        folder.mkdir(parents=True, exist_ok=True)
        counter = next_number(folder, re.escape(relative.name), ".latent")
        metadata = {"prompt": json.dumps(ctx.run.prompt)}
        if ctx.run.workflow is not None:
            metadata["workflow"] = json.dumps(ctx.run.workflow)
        data = save({"latent_tensor": self.samples.samples.contiguous(), "latent_format_version_0": torch.tensor([])},
                    metadata=metadata)
        path = ctx.write_new_file(folder, numbered(relative.name, ".latent", counter), lambda fh: fh.write(data))
        return SavedFiles((str(path),))


def input_latents(vctx) -> list[str]:
    folder = vctx.settings.input_dir
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(".latent"))


class LoadLatent(Node):
    """Load a `.latent` file from the input folder."""

    class_type = "LoadLatent"
    display_name = "LoadLatent"
    category = "_for_testing"

    latent: str = Widget(check=in_input_folder("latent"), ui_choices=input_latents)

    @classmethod
    def fingerprint(cls, constants, settings):
        return settings.file_sha256(settings.input_file(constants["latent"], "latent"))

    def execute(self, ctx) -> LatentOut:
        from safetensors.torch import load_file

        tensors = load_file(str(ctx.settings.input_file(self.latent, "latent")), device="cpu")
        if "latent_tensor" not in tensors:
            raise ValueError(f"{self.latent} is not a latent file: it has no latent_tensor")
        scale = 1.0 if "latent_format_version_0" in tensors else 1.0 / OLD_FORMAT_SCALE
        return LatentOut(Latent(tensors["latent_tensor"].float() * scale))
