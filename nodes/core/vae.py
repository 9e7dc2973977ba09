"""VAELoader, VAEDecode, VAEEncode for SDXL-family VAEs stored as one file (LDM or diffusers keys)."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from engine import EdgeValue, Link, ModelLoadError, Node, NodeOutput, Widget
from engine.settings import Settings

from ..types import Image, Latent, Mask
from .latent import LatentOut

log = logging.getLogger(__name__)

VAE_EXTENSIONS = (".safetensors", ".sft", ".pt", ".ckpt", ".bin", ".pth")
SDXL_VAE_CONFIG = Path(__file__).parent / "configs" / "sdxl_vae.json"


def walk_folders(root: Path):
    """(folder, its file names) for `root` and every folder below it, linked folders included
    (each real folder once, so a link loop ends)."""
    seen = set()
    for here, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        yield Path(here), files


def model_files(settings: Settings, folder: str, extensions: tuple[str, ...]) -> list[str]:
    """Files under `<models>/<folder>`, as ComfyUI lists them (relative, '/'-separated, sorted)."""
    root = settings.models_dir / folder
    return sorted((here.relative_to(root) / name).as_posix() for here, files in walk_folders(root)
                  for name in files if Path(name).suffix.lower() in extensions and (here / name).is_file())


def model_path(settings: Settings, folder: str, name: str, what: str) -> Path:
    """`<models>/<folder>/<name>` (Settings.model_file's policy); a missing file is a ModelLoadError,
    which callers report as bad input, naming the node."""
    try:
        return settings.model_file(folder, name, what)
    except FileNotFoundError as exc:
        raise ModelLoadError(str(exc)) from exc


def _vae_files(vctx) -> list[str]:
    return model_files(vctx.settings, "vae", VAE_EXTENSIONS)


def read_state_dict(path: Path) -> dict:
    """Every tensor of a safetensors file or of a torch pickle loaded with weights_only=True
    (state_files.CheckpointFile tells the format by the content, not the name)."""
    from .state_files import CheckpointFile

    return CheckpointFile(path).tensors("")


def vae_compute_dtype(device: str):
    import torch

    # ComfyUI's default: bf16 where the GPU has it, fp32 otherwise; never fp16 (SDXL VAE NaNs).
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@dataclass(frozen=True)
class VAE(EdgeValue):
    """A handle: the file and where to run it. `ctx.models.get(handle)` gives the AutoencoderKL."""

    comfy_type = "VAE"
    path: str
    device: str
    prefix: str = ""  # "first_stage_model." for the VAE inside a checkpoint

    @property
    def cache_key(self):
        return ("vae", self.path, self.prefix, self.device)

    def estimated_bytes(self) -> int:
        if self.prefix:  # an SD VAE is about 84M parameters, whatever the checkpoint's size
            return 84_000_000 * 4
        return Path(self.path).stat().st_size * 2  # at most: fp16 on disk, fp32 in memory

    def load(self):
        from diffusers import AutoencoderKL
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        from .state_files import CheckpointFile

        path = Path(self.path)
        state = CheckpointFile(path).tensors(self.prefix)
        config = json.loads(SDXL_VAE_CONFIG.read_text())
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        # diffusers keys first: both layouts name decoder.conv_in alike
        if "decoder.up_blocks.0.resnets.0.norm1.weight" in state:  # diffusers keys
            config.update(_shape_overrides(state, "encoder.down_blocks.{}.resnets.{}.conv1.weight",
                                           "encoder.down_blocks"))
        elif "decoder.conv_in.weight" in state:  # LDM keys (sdxl.vae.safetensors, ComfyUI files)
            config.update(_shape_overrides(state, "encoder.down.{}.block.{}.conv1.weight", "encoder.down"))
            state = convert_ldm_vae_checkpoint(state, {**config, "_class_name": "AutoencoderKL"})
        else:
            raise ModelLoadError(f"{path} is not a VAE: it has neither LDM nor diffusers VAE keys")
        try:
            vae = AutoencoderKL(**config)
            vae.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"{path} does not fit an SDXL-style VAE: {str(exc)[:500]}") from exc
        dtype = vae_compute_dtype(self.device)
        vae = vae.to(self.device) if dtype == vae.dtype else vae.to(self.device, dtype)
        return vae.eval()


def _shape_overrides(state: dict, resnet_pattern: str, down_prefix: str) -> dict:
    """Channel widths and depth read off the weights, so smaller SDXL-topology VAEs load too."""
    levels = sorted({int(k[len(down_prefix) + 1:].split(".")[0]) for k in state if k.startswith(down_prefix + ".")})
    widths = [int(state[resnet_pattern.format(i, 0)].shape[0]) for i in levels]
    layers = len({k.split(".")[4] for k in state if k.startswith(f"{down_prefix}.0.") and ".conv1." in k})
    latent = int(state["decoder.conv_in.weight"].shape[1])
    return {"block_out_channels": widths, "layers_per_block": layers, "latent_channels": latent,
            "down_block_types": ["DownEncoderBlock2D"] * len(widths),
            "up_block_types": ["UpDecoderBlock2D"] * len(widths)}


@dataclass(frozen=True)
class VAEOut(NodeOutput):
    VAE: VAE


class VAELoader(Node):
    """Load a VAE file from `<models>/vae`."""

    class_type = "VAELoader"
    display_name = "Load VAE"
    loads_models = True
    category = "loaders"

    vae_name: str = Widget(choices=_vae_files)

    @classmethod
    def fingerprint(cls, constants, settings):
        return settings.file_sha256(settings.model_file("vae", constants["vae_name"], "vae_name"))

    def execute(self, ctx) -> VAEOut:
        return VAEOut(VAE(str(model_path(ctx.settings, "vae", self.vae_name, "vae_name")), ctx.device))


@dataclass(frozen=True)
class ImageOut(NodeOutput):
    IMAGE: Image


class VAEDecode(Node):
    """Latents → images [B, H, W, 3] in [0, 1]. No latent scaling: LATENTs are raw VAE latents."""

    class_type = "VAEDecode"
    display_name = "VAE Decode"
    category = "latent"

    samples: Latent = Link()
    vae: VAE = Link()

    def execute(self, ctx) -> ImageOut:
        return ImageOut(Image(decode_latents(ctx, self.vae, self.samples.samples)))


def decode_latents(ctx, vae: VAE, latents, tiles: tuple[int, int] | None = None):
    """Raw latents → images [B, H, W, 3] in [0, 1], whole or in (tile, overlap) latent-cell
    tiles; like ComfyUI, a whole decode that runs out of memory is done again in 64-cell tiles."""
    import torch

    from .tiles import decoded_in_tiles

    model = ctx.models.get(vae)
    dtype = next(model.parameters()).dtype

    def decode(part):
        return model.decode(part.to(vae.device, dtype)).sample.float()

    with torch.inference_mode():
        if tiles is None:
            try:
                decoded = decode(latents)
            except torch.OutOfMemoryError:
                log.warning("out of memory decoding the whole image; decoding it again in tiles, as ComfyUI does")
                tiles = (64, 16)
        if tiles is not None:
            decoded = decoded_in_tiles(decode, latents, *tiles)
    if torch.isnan(decoded).any():
        raise ValueError(f"the VAE produced NaNs in {dtype} (an SDXL VAE in fp16 does this; "
                         "use the sdxl-vae-fp16-fix weights or run it in fp32/bf16)")
    return ((decoded + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).cpu()


class VAEEncode(Node):
    """Images → raw latents (posterior mode, no sampling); sides cropped to multiples of 8."""

    class_type = "VAEEncode"
    display_name = "VAE Encode"
    category = "latent"

    pixels: Image = Link()
    vae: VAE = Link()

    def execute(self, ctx) -> LatentOut:
        return LatentOut(Latent(encode_pixels(ctx, self.vae, crop_to_multiple_of_8(self.pixels.pixels[..., :3]))))


def crop_to_multiple_of_8(images):
    """Center-crop [B, H, W, ...] to sides that are multiples of 8, offset (size % 8) // 2 as
    ComfyUI crops."""
    height, width = images.shape[1] // 8 * 8, images.shape[2] // 8 * 8
    top, left = (images.shape[1] % 8) // 2, (images.shape[2] % 8) // 2
    return images[:, top:top + height, left:left + width]


def encode_pixels(ctx, vae: VAE, images, tiles: tuple[int, int] | None = None):
    """[B, H, W, 3] in [0, 1] → raw latents (posterior mode), float32 on the CPU, whole or in
    (tile, overlap) pixel tiles; a whole encode that runs out of memory is redone in 512s."""
    import torch

    from .tiles import encoded_in_tiles

    model = ctx.models.get(vae)
    dtype = next(model.parameters()).dtype

    def encode(part):
        return model.encode(part.to(vae.device, dtype) * 2.0 - 1.0).latent_dist.mode().float()

    pixels = images.permute(0, 3, 1, 2)
    with torch.inference_mode():
        if tiles is None:
            try:
                return encode(pixels).cpu()
            except torch.OutOfMemoryError:
                log.warning("out of memory encoding the whole image; encoding it again in tiles, as ComfyUI does")
                tiles = (512, 64)
        return encoded_in_tiles(encode, pixels, *tiles, channels=model.config.latent_channels).cpu()


class VAEEncodeForInpaint(Node):
    """Encode with the masked pixels set to grey, and a grown, rounded noise mask."""

    class_type = "VAEEncodeForInpaint"
    display_name = "VAE Encode (for Inpainting)"
    category = "latent/inpaint"

    pixels: Image = Link()
    vae: VAE = Link()
    mask: Mask = Link()
    grow_mask_by: int = Widget(6, ge=0, le=64)

    def execute(self, ctx) -> LatentOut:
        import math

        import torch

        pixels = self.pixels.pixels[..., :3].clone()
        mask = self.mask.mask.reshape(-1, 1, *self.mask.mask.shape[-2:]).float()
        mask = torch.nn.functional.interpolate(mask, size=pixels.shape[1:3], mode="bilinear")
        pixels = crop_to_multiple_of_8(pixels)
        mask = crop_to_multiple_of_8(mask.movedim(1, -1)).movedim(-1, 1)
        height, width = pixels.shape[1], pixels.shape[2]
        if self.grow_mask_by == 0:
            grown = mask
        else:
            kernel = torch.ones((1, 1, self.grow_mask_by, self.grow_mask_by))
            padding = math.ceil((self.grow_mask_by - 1) / 2)
            grown = torch.clamp(torch.nn.functional.conv2d(mask.round(), kernel, padding=padding), 0, 1)
        keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)
        pixels = (pixels - 0.5) * keep + 0.5
        latents = encode_pixels(ctx, self.vae, pixels)
        return LatentOut(Latent(latents, noise_mask=grown[:, :, :height, :width].round()))
