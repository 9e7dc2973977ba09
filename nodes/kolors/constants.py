"""Kolors numbers that the wrapper hard-codes (kijai/ComfyUI-KwaiKolorsWrapper:nodes.py)."""

VAE_SCALING_FACTOR = 0.13025  # SDXL VAE
MAX_TEXT_TOKENS = 256

# The scheduler settings KolorsSampler rebuilds on every call (1100 training steps, beta_end 0.014).
KOLORS_SCHEDULER_CONFIG = {
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.014,
    "dynamic_thresholding_ratio": 0.995, "num_train_timesteps": 1100, "prediction_type": "epsilon",
    "rescale_betas_zero_snr": False, "steps_offset": 1, "timestep_spacing": "leading",
    "trained_betas": None,
}
