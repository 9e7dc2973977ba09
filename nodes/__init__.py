"""The built-in node pack. `ALL_NODES` is what the `run_graph.nodes` entry point publishes."""
from .core.image import LoadImage, PreviewImage, SaveImage
from .core.latent import EmptyLatentImage
from .core.primitives import (PrimitiveBoolean, PrimitiveFloat, PrimitiveInt, PrimitiveString,
                              PrimitiveStringMultiline)
from .core.vae import VAEDecode, VAEEncode, VAELoader
from .kolors.loaders import DownloadAndLoadChatGLM3, DownloadAndLoadKolorsModel
from .kolors.lora import KolorsLoraLoaderModelOnly, LoadKolorsLoRA
from .kolors.sampler import KolorsSampler
from .kolors.text_encode import KolorsTextEncode

ALL_NODES = [
    EmptyLatentImage, LoadImage, PreviewImage, SaveImage, VAEDecode, VAEEncode, VAELoader,
    PrimitiveBoolean, PrimitiveFloat, PrimitiveInt, PrimitiveString, PrimitiveStringMultiline,
    DownloadAndLoadChatGLM3, DownloadAndLoadKolorsModel, KolorsSampler, KolorsTextEncode, LoadKolorsLoRA,
    KolorsLoraLoaderModelOnly,
]
