"""Stable Diffusion 1.x / 2.x and SDXL from single-file checkpoints (ComfyUI's core loaders)."""
