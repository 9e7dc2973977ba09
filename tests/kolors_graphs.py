"""API-format Kolors graphs for tests and benchmarks (same node ids as the shared workflows)."""


def txt2img(prompt="a cat|a dog", *, steps=3, cfg=5.0, scheduler="EulerDiscreteScheduler", seed=42,
            size=64, precision="fp32", negative="", image=None, strength=1.0):
    graph = {
        "6": {"class_type": "DownloadAndLoadKolorsModel", "inputs": {"model": "Kwai-Kolors/Kolors", "precision": precision}},
        "13": {"class_type": "DownloadAndLoadChatGLM3", "inputs": {"precision": "fp16"}},
        "12": {"class_type": "KolorsTextEncode", "inputs": {"chatglm3_model": ["13", 0], "prompt": prompt,
                                                            "negative_prompt": negative, "num_images_per_prompt": 1}},
        "14": {"class_type": "KolorsSampler", "inputs": {
            "kolors_model": ["6", 0], "kolors_embeds": ["12", 0], "width": size, "height": size, "seed": seed,
            "steps": steps, "cfg": cfg, "scheduler": scheduler, "denoise_strength": strength}},
        "11": {"class_type": "VAELoader", "inputs": {"vae_name": "sdxl.vae.safetensors"}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["11", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    }
    if image is not None:
        graph["20"] = {"class_type": "LoadImage", "inputs": {"image": image}}
        graph["21"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["11", 0]}}
        graph["14"]["inputs"]["latent"] = ["21", 0]
    return graph
