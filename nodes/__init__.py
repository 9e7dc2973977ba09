"""The built-in node pack. `ALL_NODES` is what the `run_graph.nodes` entry point publishes."""
from .core.conditioning import (ConditioningAverage, ConditioningCombine, ConditioningConcat,
                                ConditioningSetArea, ConditioningSetAreaPercentage, ConditioningSetMask,
                                ConditioningSetTimestepRange, ConditioningZeroOut)
from .core.image import LoadImage, PreviewImage, SaveImage
from .core.ksampler import KSampler, KSamplerAdvanced
from .core.latent import EmptyLatentImage
from .core.primitives import (PrimitiveBoolean, PrimitiveFloat, PrimitiveInt, PrimitiveString,
                              PrimitiveStringMultiline)
from .core.vae import VAEDecode, VAEEncode, VAELoader
from .kolors.loaders import DownloadAndLoadChatGLM3, DownloadAndLoadKolorsModel
from .kolors.lora import KolorsLoraLoaderModelOnly, LoadKolorsLoRA
from .kolors.sampler import KolorsSampler
from .kolors.text_encode import KolorsTextEncode
from .sd.loaders import CheckpointLoader, CheckpointLoaderSimple, CLIPSetLastLayer
from .sd.text import CLIPTextEncode, CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner

ALL_NODES = [
    EmptyLatentImage, LoadImage, PreviewImage, SaveImage, VAEDecode, VAEEncode, VAELoader,
    PrimitiveBoolean, PrimitiveFloat, PrimitiveInt, PrimitiveString, PrimitiveStringMultiline,
    DownloadAndLoadChatGLM3, DownloadAndLoadKolorsModel, KolorsSampler, KolorsTextEncode, LoadKolorsLoRA,
    KolorsLoraLoaderModelOnly,
    CheckpointLoaderSimple, CheckpointLoader, CLIPSetLastLayer, CLIPTextEncode, CLIPTextEncodeSDXL,
    CLIPTextEncodeSDXLRefiner, KSampler, KSamplerAdvanced, ConditioningCombine, ConditioningConcat,
    ConditioningAverage, ConditioningZeroOut, ConditioningSetArea, ConditioningSetAreaPercentage,
    ConditioningSetMask, ConditioningSetTimestepRange,
]
