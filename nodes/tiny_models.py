"""make-tiny-models: every tiny random-weight model the tests and examples use, in ComfyUI's
models layout (Kolors folders, SD1.5/SDXL single-file checkpoints, an ESRGAN upscaler)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .core.tiny_upscaler import write_tiny_esrgan
from .kolors.tiny import make_tiny_models as make_tiny_kolors
from .sd.tiny import make_tiny_checkpoints


def make_tiny_models(root: Path, seed: int = 0) -> Path:
    make_tiny_kolors(Path(root), seed)
    make_tiny_checkpoints(Path(root), seed)
    write_tiny_esrgan(Path(root) / "upscale_models" / "tiny_esrgan_x4.safetensors", seed)
    return Path(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make-tiny-models", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="models folder to write (ComfyUI layout)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make_tiny_models(args.dir, args.seed)
    print(f"tiny models written to {args.dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
