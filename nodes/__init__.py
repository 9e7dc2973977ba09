"""The built-in node pack. `ALL_NODES` is what the `run_graph.nodes` entry point publishes."""
from .core.image import LoadImage, PreviewImage, SaveImage
from .core.latent import EmptyLatentImage
from .core.primitives import (PrimitiveBoolean, PrimitiveFloat, PrimitiveInt, PrimitiveString,
                              PrimitiveStringMultiline)

ALL_NODES = [
    EmptyLatentImage, LoadImage, PreviewImage, SaveImage,
    PrimitiveBoolean, PrimitiveFloat, PrimitiveInt, PrimitiveString, PrimitiveStringMultiline,
]
