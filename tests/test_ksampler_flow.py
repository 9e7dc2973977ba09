"""KSampler's flow on a toy model: noise, masks, CFG over several conditionings, areas, windows."""
from __future__ import annotations

import torch

from nodes.sampling.conditioning import CondEntry
from nodes.sampling.ksampler import SamplingModel, Steps, sample
from nodes.sampling.latent_format import LatentFormat
from nodes.sampling.model_sampling import DiscreteSampling
from nodes.sampling.noise import initial_noise
from nodes.sampling.schedules import ksampler_sigmas

MS = DiscreteSampling()


class ToyModel:
    """ε = (c_in-scaled input) · a + the entry's offset: each entry's prediction is known."""

    def __init__(self):
        self.calls = []

    def predict(self, x_in, timesteps, entries, size, concat=None):
        self.calls.append(len(entries))
        offsets = torch.stack([e.cross_attn.mean() * torch.ones(x_in.shape[1:]) for e in entries])
        return x_in * 0.3 + offsets

    def sampling_model(self):
        return SamplingModel(self.predict, MS, latent_format=LatentFormat(0.5), device="cpu")


def entry(value: float, **kwargs) -> CondEntry:
    return CondEntry(torch.full((1, 77, 8), value), **kwargs)


def run(model=None, latent=None, positive=(entry(1.0),), negative=(entry(-1.0),), **kwargs):
    model = model or ToyModel()
    options = dict(seed=3, cfg=4.0, sampler_name="euler", scheduler="normal", steps=Steps(6)) | kwargs
    latent = torch.zeros([1, 4, 8, 8]) if latent is None else latent
    return sample(model.sampling_model(), latent, positive=list(positive), negative=list(negative), **options)


def test_cfg_one_never_evaluates_the_negative():
    model = ToyModel()
    run(model, cfg=1.0)
    assert set(model.calls) == {1}
    model = ToyModel()
    run(model, cfg=2.0)
    assert set(model.calls) == {2}  # cond and uncond batched in one call


def test_combined_entries_average_their_predictions_by_strength():
    """Two positive entries with strengths 1 and 3 predict as one entry of their weighted mean."""
    combined = run(positive=(entry(1.0), entry(2.0, strength=3.0)))
    mean = run(positive=(entry((1.0 * 1 + 2.0 * 3) / 4),))
    assert torch.allclose(combined, mean, atol=1e-5)


def test_an_area_entry_only_changes_its_window():
    base = run(positive=(entry(1.0),))
    with_area = run(positive=(entry(1.0), entry(5.0, area=(4, 4, 0, 0))))
    changed = (with_area - base).abs().amax(dim=(0, 1)) > 1e-6
    assert changed[:4, :4].all() and not changed[4:, :].any() and not changed[:, 4:].any()


def test_timestep_range_switches_an_entry_off():
    never = run(positive=(entry(1.0), entry(5.0, start_percent=0.0, end_percent=0.0)))
    assert torch.allclose(never, run(positive=(entry(1.0),)), atol=1e-6)


def test_noise_mask_keeps_the_input_latent_where_it_is_zero():
    latent = torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(1))
    mask = torch.zeros([1, 1, 8, 8])
    mask[..., 2:6, 2:6] = 1.0
    out = run(latent=latent, noise_mask=mask)
    assert torch.allclose(out[..., :, :2], latent[..., :, :2], atol=1e-5)
    assert not torch.allclose(out[..., 2:6, 2:6], latent[..., 2:6, 2:6], atol=1e-2)


def test_start_noise_is_sqrt_one_plus_sigma_squared_at_full_denoise_and_sigma_below():
    seen = {}

    class Spy(ToyModel):
        def predict(self, x_in, timesteps, entries, size, concat=None):
            seen.setdefault("first", x_in.clone())
            return super().predict(x_in, timesteps, entries, size)

    # the model sees x·c_in with c_in = 1/√(1+σ²): n itself at full denoise, n·σ·c_in below it
    noise = initial_noise([1, 4, 8, 8], 3)
    run(Spy(), cfg=1.0)
    assert torch.allclose(seen["first"], noise, atol=1e-6)
    seen.clear()
    run(Spy(), cfg=1.0, steps=Steps(6, denoise=0.5))
    sigma = float(ksampler_sigmas(MS, "euler", "normal", 6, 0.5)[0])
    assert torch.allclose(seen["first"], noise * sigma / (1 + sigma ** 2) ** 0.5, atol=1e-6)


def test_two_advanced_windows_with_leftover_noise_equal_one_full_run():
    full = run(steps=Steps(8))
    first = run(steps=Steps(8, start_at_step=0, end_at_step=5, force_full_denoise=False))
    second = run(latent=first, add_noise=False, steps=Steps(8, start_at_step=5, end_at_step=10000, force_full_denoise=True))
    assert torch.allclose(second, full, atol=1e-5)


def test_a_window_past_the_end_returns_the_input():
    latent = torch.randn([1, 4, 8, 8])
    assert run(latent=latent, steps=Steps(4, start_at_step=4, end_at_step=10000)) is latent


def test_batch_index_picks_the_matching_draw_of_the_sequence():
    draws = initial_noise([3, 4, 13, 7], 9, batch_index=[0, 1, 2])
    assert torch.equal(initial_noise([1, 4, 13, 7], 9, batch_index=[2]), draws[2:])
    # a plain batch draw equals the per-image draws only when C·h·w is a multiple of 16
    assert torch.equal(initial_noise([3, 4, 8, 8], 9), initial_noise([3, 4, 8, 8], 9, batch_index=[0, 1, 2]))
    assert not torch.equal(initial_noise([3, 4, 13, 7], 9), draws)


def test_an_area_entry_gets_a_negative_counterpart_with_the_same_area():
    """ComfyUI's rule: the negative side gets a copy of each positive area entry, carrying the
    negative's text. With it, a positive area entry of strength s and a plain negative give the
    same result as an explicit negative area entry of that strength."""
    area = dict(area=(4, 4, 0, 0), strength=2.0)
    implicit = run(positive=(entry(1.0), entry(5.0, **area)), negative=(entry(-1.0),))
    explicit = run(positive=(entry(1.0), entry(5.0, **area)), negative=(entry(-1.0), entry(-1.0, **area)))
    assert torch.allclose(implicit, explicit, atol=1e-6)
    no_copy_when_present = run(positive=(entry(1.0), entry(5.0, **area)),
                               negative=(entry(-1.0), entry(-3.0, area=(4, 4, 0, 0))))
    assert not torch.allclose(no_copy_when_present, implicit, atol=1e-3)


def test_a_mask_entry_weights_by_the_mask_and_mask_bounds_crops_the_model_input():
    shapes = []

    class Spy(ToyModel):
        def predict(self, x_in, timesteps, entries, size, concat=None):
            shapes.append(tuple(x_in.shape[-2:]))
            return super().predict(x_in, timesteps, entries, size)

    mask = torch.zeros([1, 16, 16])
    mask[:, 2:12, 3:13] = 1.0
    base = run(latent=torch.zeros([1, 4, 16, 16]), positive=(entry(1.0),))
    masked = run(Spy(), latent=torch.zeros([1, 4, 16, 16]), positive=(entry(1.0), entry(5.0, mask=mask)))
    changed = (masked - base).abs().amax(dim=(0, 1)) > 1e-6
    assert changed[2:12, 3:13].all() and not changed[12:, :].any() and not changed[:, :3].any()
    shapes.clear()
    run(Spy(), latent=torch.zeros([1, 4, 16, 16]), positive=(entry(1.0), entry(5.0, mask=mask, set_area_to_bounds=True)))
    assert (10, 10) in shapes and (16, 16) in shapes


def test_a_mask_bounds_entry_gets_a_same_area_counterpart_on_the_other_side_as_comfyui_gives_it():
    """ComfyUI turns `mask bounds` into an area before pairing areas, so the negative gains a copy
    of the masked entry with the negative's text; writing that copy out changes nothing."""
    class SeesItsWindow(ToyModel):  # a prediction that depends on the crop it is given
        def predict(self, x_in, timesteps, entries, size, concat=None):
            return super().predict(x_in, timesteps, entries, size) + 0.05 * x_in.shape[-1]

    mask = torch.zeros([1, 16, 16])
    mask[:, 2:12, 3:13] = 1.0
    bounded = dict(mask=mask, set_area_to_bounds=True, mask_strength=0.8)
    latent = torch.zeros([1, 4, 16, 16])

    def sampled(positive, negative):
        return run(SeesItsWindow(), latent=latent, positive=positive, negative=negative)

    implicit = sampled((entry(1.0), entry(5.0, **bounded)), (entry(-1.0),))
    explicit = sampled((entry(1.0), entry(5.0, **bounded)), (entry(-1.0), entry(-1.0, **bounded)))
    assert torch.allclose(implicit, explicit, atol=1e-5)
    without_copy = sampled((entry(1.0), entry(5.0, **bounded)), (entry(-1.0), entry(-1.0, **bounded, strength=0.0)))
    assert not torch.allclose(implicit, without_copy, atol=1e-3)


def test_an_inpainting_model_gets_the_rounded_mask_and_the_latent_as_extra_channels():
    seen = []

    class Inpainting(ToyModel):
        def predict(self, x_in, timesteps, entries, size, concat=None):
            seen.append(concat)
            return super().predict(x_in, timesteps, entries, size)

        def sampling_model(self):
            return SamplingModel(self.predict, MS, latent_format=LatentFormat(0.5), device="cpu", concat_channels=5)

    latent = torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(4))
    mask = torch.zeros([1, 1, 8, 8])
    mask[..., :, 3:] = 0.7
    run(Inpainting(), latent=latent, noise_mask=mask)
    concat = seen[0]
    assert concat.shape == (2, 5, 8, 8)  # cond and uncond
    assert torch.equal(concat[0, :1], mask.round()[0]) and torch.allclose(concat[0, 1:], latent[0] * 0.5)
    seen.clear()
    run(Inpainting(), latent=latent)  # no mask: ones and mid grey
    assert seen[0][0, 0].eq(1).all() and seen[0][0, 1].eq(0.8223).all() and seen[0][0, 4].eq(0.1380).all()


def test_an_entry_that_carries_its_masked_image_gives_the_inpainting_channels():
    """InpaintModelConditioning's entries bring their own masked latent (scaled like the sampled
    one, stretched to its size and batch) and mask; entries without keep the noise-mask default."""
    from nodes.sampling.ksampler import resize_to_batch

    seen = []

    class Inpainting(ToyModel):
        def predict(self, x_in, timesteps, entries, size, concat=None):
            seen.append((list(entries), concat))
            return super().predict(x_in, timesteps, entries, size)

        def sampling_model(self):
            return SamplingModel(self.predict, MS, latent_format=LatentFormat(0.5), device="cpu", concat_channels=5)

    generator = torch.Generator().manual_seed(5)
    latent = torch.randn([2, 4, 8, 8], generator=generator)
    own_latent = torch.randn([1, 4, 4, 4], generator=generator)  # another size: stretched
    own_mask = torch.zeros([1, 1, 32, 32])
    own_mask[..., 16:, :] = 1.0
    carrying = entry(1.0, concat_latent=own_latent, concat_mask=own_mask)
    run(Inpainting(), latent=latent, positive=(carrying,), negative=(entry(-1.0),), noise_mask=None)
    entries, concat = seen[0]
    for i, e in enumerate(entries):
        if e.cross_attn.mean() > 0:  # the carrying entry (positive)
            assert concat[i, 0, 4:].eq(1).all() and concat[i, 0, :4].eq(0).all()
            stretched = torch.nn.functional.interpolate(own_latent * 0.5, size=(8, 8), mode="bilinear")
            assert torch.allclose(concat[i, 1:], stretched[0], atol=1e-6)
        else:
            assert concat[i, 0].eq(1).all() and concat[i, 1].eq(0.8223).all()
    pair = torch.arange(2.0).reshape(2, 1)
    assert resize_to_batch(pair, 4).flatten().tolist() == [0, 0, 1, 1]
    assert resize_to_batch(torch.arange(5.0), 3).tolist() == [0, 2, 4]


def test_differential_diffusion_turns_the_mask_into_a_falling_threshold():
    from nodes.sampling.ksampler import differential_mask

    sigmas = ksampler_sigmas(MS, "euler", "normal", 10)
    mask = torch.linspace(0, 1, 11).reshape(1, 1, 1, 11)
    opened = [differential_mask(mask, sigma.reshape(1), sigmas, MS, 1.0) for sigma in sigmas[:-1]]
    assert opened[0].sum() == 1  # at the first σ only the pixels masked 1
    counts = [int(m.sum()) for m in opened]
    assert counts == sorted(counts) and counts[-1] == 11  # more open as σ falls, all at σ_min
    assert set(opened[4].unique().tolist()) <= {0.0, 1.0}
    half = differential_mask(mask, sigmas[4].reshape(1), sigmas, MS, 0.5)
    assert torch.allclose(half, 0.5 * opened[4] + 0.5 * mask)
