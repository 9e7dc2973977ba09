"""k-diffusion's own `sampling.py`, loaded without the package `__init__` (which pulls in
torchvision, wandb and CLIP): the independent reference for the samplers."""
from __future__ import annotations

import importlib.util
import sys
import types
from importlib import metadata
from pathlib import Path


def load_sampling():
    if "k_diffusion_ref.sampling" in sys.modules:
        return sys.modules["k_diffusion_ref.sampling"]
    try:
        files = metadata.files("k-diffusion") or []
    except metadata.PackageNotFoundError:
        return None
    source = next((Path(f.locate()) for f in files if str(f).endswith("k_diffusion/sampling.py")), None)
    if source is None:
        return None
    package = types.ModuleType("k_diffusion_ref")
    package.__path__ = []
    utils = types.ModuleType("k_diffusion_ref.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules.update({"k_diffusion_ref": package, "k_diffusion_ref.utils": utils})
    package.utils = utils
    spec = importlib.util.spec_from_file_location("k_diffusion_ref.sampling", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
