"""The sampler and scheduler names of ComfyUI 0.3.64's widgets; importable without torch, so
node classes can declare their choices cheaply."""

# ComfyUI 0.3.64's KSampler list, in its order; the widget offers all of them.
SAMPLER_NAMES = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)

SCHEDULERS = ("simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
              "linear_quadratic", "kl_optimal")

# These compute one step more and drop the second-to-last σ.
DISCARD_PENULTIMATE_SIGMA = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})

# Samplers that read the unconditional prediction: the negative is evaluated even at cfg 1.
# Samplers only the Sampler… nodes give (no KSampler name): SamplerEulerCFGpp's alternative and
# SamplerLCMUpscale's.
NODE_ONLY_SAMPLERS = ("euler_cfg_pp_alternative", "lcm_upscale")
NEEDS_UNCOND = frozenset(name for name in SAMPLER_NAMES + NODE_ONLY_SAMPLERS if "_cfg_pp" in name)

