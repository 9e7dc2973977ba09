"""ComfyUI's sampling stack, model-independent: the discrete σ table and its parameterisations,
the schedules, the k-diffusion-style samplers, noise sources and CFG over conditionings.

Families (SD1.x, SDXL, ...) provide a denoiser; everything here works on tensors and σ only.
"""
