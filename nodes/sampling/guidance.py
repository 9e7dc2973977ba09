"""CFG over conditionings (ComfyUI's `sampling_function` / `calc_cond_batch`).

Each active entry is evaluated on its area of the latent, with a weight `mult` (strength × area
feather or mask); a side's prediction is `Σ mult·D / (Σ mult + 1e-37)`; then
`D = D_neg + cfg·(D_pos − D_neg)`. With cfg = 1 the negative side is not evaluated at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .conditioning import CondEntry
from .model_sampling import DiscreteSampling
from .post_cfg import PostCfgArgs
from .pre_cfg import PreCfgArgs

# (x [N,C,h,w], σ [N], entries and (h, w, y, x) areas: one per image of x) -> x0 estimates [N,C,h,w];
# called with perturbed=True for PerturbedAttentionGuidance's second look at the positive side
BatchPredictor = Callable[..., torch.Tensor]


@dataclass
class _Job:
    side: int
    entry: CondEntry
    area: tuple[int, int, int, int]  # (h, w, y, x)
    mult: torch.Tensor  # [B, 1 or C, h, w]


def _area_of(entry: CondEntry, height: int, width: int) -> tuple[int, int, int, int]:
    if entry.area_percent is not None:
        h, w, y, x = entry.area_percent
        area = (round(h * height), round(w * width), round(y * height), round(x * width))
    elif entry.area is not None:
        area = entry.area
    else:
        return height, width, 0, 0
    h, w, y, x = area
    y, x = min(y, height - 1), min(x, width - 1)
    return max(1, min(h, height - y)), max(1, min(w, width - x)), y, x


def _mask_bounds(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """The mask's bounding box as (h, w, y, x), at least 8×8 (ComfyUI's `mask bounds`); an
    empty mask gets the smallest area, where it changes nothing anyway."""
    rows = torch.nonzero(mask.amax(dim=-1) > 0).flatten()
    cols = torch.nonzero(mask.amax(dim=-2) > 0).flatten()
    if len(rows) == 0:
        return 8, 8, 0, 0
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0


def _latent_mask(entry: CondEntry, height: int, width: int) -> torch.Tensor:
    mask = entry.mask.reshape(-1, 1, *entry.mask.shape[-2:]).float()
    return torch.nn.functional.interpolate(mask, size=(height, width), mode="bilinear")


def _resolved(entry: CondEntry, height: int, width: int) -> CondEntry:
    """The entry with its area in latent cells, as ComfyUI resolves areas before sampling: a
    percentage taken of the latent, a `mask bounds` mask's bounding box."""
    if entry.mask is not None and entry.set_area_to_bounds:
        h, w, y, x = _mask_bounds(_latent_mask(entry, height, width)[:, 0].abs().amax(dim=0))
        return entry.replace(area=(min(h, height - y), min(w, width - x), y, x), set_area_to_bounds=False)
    if entry.area is not None or entry.area_percent is not None:
        return entry.replace(area=_area_of(entry, height, width), area_percent=None)
    return entry


def _weights(entry: CondEntry, x: torch.Tensor) -> tuple[tuple[int, int, int, int], torch.Tensor]:
    batch, _, height, width = x.shape
    if entry.mask is not None:
        mask = _latent_mask(entry, height, width).to(x.device)
        if mask.shape[0] < batch:
            mask = mask.repeat(math.ceil(batch / mask.shape[0]), 1, 1, 1)[:batch]
        area = _area_of(entry, height, width)
        h, w, y, x0 = area
        return area, mask[:, :, y:y + h, x0:x0 + w] * entry.mask_strength * entry.strength
    area = _area_of(entry, height, width)
    h, w, y, x0 = area
    mult = torch.full((batch, 1, h, w), float(entry.strength), device=x.device)
    if (h, w) != (height, width):
        # feather every edge that is not on the image border
        for size, dim, touches_start, touches_end in ((h, 2, y == 0, y + h >= height), (w, 3, x0 == 0, x0 + w >= width)):
            ramp = min(8, size // 4)
            for t in range(ramp):
                factor = (t + 1) / ramp
                if not touches_start:
                    mult.narrow(dim, t, 1).mul_(factor)
                if not touches_end:
                    mult.narrow(dim, size - 1 - t, 1).mul_(factor)
    return area, mult


def _active(entry: CondEntry, sigma: float, ms: DiscreteSampling) -> bool:
    if entry.start_percent > 0.0 and sigma > ms.percent_to_sigma(entry.start_percent):
        return False
    if entry.end_percent < 1.0 and sigma < ms.percent_to_sigma(entry.end_percent):
        return False
    return True


def _same_tokens(jobs: list[_Job]) -> bool:
    lengths = {job.entry.cross_attn.shape[1] for job in jobs}
    common = math.lcm(*lengths)
    return all(common // n <= 4 for n in lengths)


def _batches(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs that can run as one UNet call: same area size, token lengths repeatable to their
    LCM, the same ControlNet link (or none). Like ComfyUI, the group is taken in reverse order
    of appearance."""
    pending, groups = list(jobs), []
    while pending:
        first = pending[0]
        # an entry with GLIGEN boxes runs alone, as ComfyUI never batches entries with patches
        group = [job for job in pending if job.area[:2] == first.area[:2] and _same_tokens([first, job])
                 and job.entry.control is first.entry.control
                 and (job is first or (job.entry.gligen is None and first.entry.gligen is None))]
        pending = [job for job in pending if job not in group]
        groups.append(group[::-1])
    return groups


def _inside(area, outer) -> bool:
    h, w, y, x = area
    oh, ow, oy, ox = outer
    return y + h <= oy + oh and x + w <= ox + ow and y >= oy and x >= ox


def _with_same_areas(sides: list[list[CondEntry]], height: int, width: int) -> list[list[CondEntry]]:
    """ComfyUI gives every area entry (a `mask bounds` mask's too) a counterpart with the same
    area on the other side: a copy of the entry whose text (and size conditioning) comes from the
    smallest entry there that encloses the area, or else from the first entry without one."""
    resolved = [[_resolved(e, height, width) for e in side] for side in sides]
    for k, side in enumerate(resolved):
        for entry in list(side):
            if entry.area is None:
                continue
            for kk, other in enumerate(resolved):
                if kk == k:
                    continue
                smallest = None
                for candidate in other:
                    if candidate.area is None:
                        smallest = smallest or candidate
                    elif _inside(entry.area, candidate.area) and (
                            smallest is None or smallest.area is None
                            or smallest.area[0] * smallest.area[1] > candidate.area[0] * candidate.area[1]):
                        smallest = candidate
                if smallest is None or smallest.area == entry.area:
                    continue
                other.append(entry.replace(
                    cross_attn=smallest.cross_attn, pooled=smallest.pooled, width=smallest.width,
                    height=smallest.height, crop_w=smallest.crop_w, crop_h=smallest.crop_h,
                    target_width=smallest.target_width, target_height=smallest.target_height,
                    aesthetic_score=smallest.aesthetic_score, prompt_type=smallest.prompt_type))
    return resolved


def _lend(positive: list[CondEntry], negative: list[CondEntry], attribute: str, lent_by) -> None:
    """ComfyUI's apply_empty_x_to_equal_area: the whole-image positive entries' ControlNets (set
    by the old ControlNetApply) or GLIGEN boxes go to the negative's whole-image entries, in turn,
    unless one of them already has its own."""
    lent = [getattr(e, attribute) for e in positive if lent_by(e) and e.area is None
            and getattr(e, attribute) is not None]
    whole = [i for i, e in enumerate(negative) if e.area is None]
    if not lent or not whole or any(getattr(negative[i], attribute) is not None for i in whole):
        return
    for k, value in enumerate(lent):
        i = whole[k % len(whole)]
        negative[i] = negative[i].replace(**{attribute: value})


class Guided:
    """The denoiser samplers call: x0 estimate for x at σ, with CFG over both sides. The last
    unconditional estimate stays readable (`uncond`) for CFG++ samplers."""

    def __init__(self, denoise, keep):
        self._denoise, self._keep = denoise, keep

    def __call__(self, x, sigma):
        return self._denoise(x, sigma)

    def uncond(self) -> torch.Tensor:
        return self._keep["uncond"]


def rescaled_cfg(cond: torch.Tensor, uncond: torch.Tensor, cfg: float, x: torch.Tensor, sigma: torch.Tensor,
                 multiplier: float) -> torch.Tensor:
    """RescaleCFG (Lin et al. 2023, §3.4), on v predictions as ComfyUI computes it: the guided v
    is scaled to the conditional v's standard deviation, blended by `multiplier`."""
    # ComfyUI hands its cfg functions x − D and takes x − result back: kept, for the same rounding
    cond, uncond = x - cond, x - uncond
    sigma = sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))
    scaled = x / (sigma * sigma + 1.0)
    v_cond = ((scaled - (x - cond)) * (sigma ** 2 + 1.0) ** 0.5) / sigma
    v_uncond = ((scaled - (x - uncond)) * (sigma ** 2 + 1.0) ** 0.5) / sigma
    v_cfg = v_uncond + cfg * (v_cond - v_uncond)
    v_rescaled = v_cfg * (torch.std(v_cond, dim=(1, 2, 3), keepdim=True) / torch.std(v_cfg, dim=(1, 2, 3), keepdim=True))
    v_final = multiplier * v_rescaled + (1.0 - multiplier) * v_cfg
    return x - (x - (scaled - v_final * sigma / (sigma * sigma + 1.0) ** 0.5))


def perpendicular_cfg(positive, negative, empty, cfg: float, neg_scale: float) -> torch.Tensor:
    """PerpNegGuider: the negative's direction (from the empty prompt) with its component along
    the positive's removed, as ComfyUI's perp_neg computes it (one dot product over the batch)."""
    pos, neg = positive - empty, negative - empty
    perp = neg - (torch.mul(neg, pos).sum() / (torch.norm(pos) ** 2)) * pos
    return empty + cfg * (pos - perp * neg_scale)


def _dual_sides(positive, negative, middle, cfg1: float, cfg2: float, nested: bool, always_uncond: bool):
    """DualCFGGuider's sides: positive, negative, middle; outside the nested style cfg2 ≈ 1
    leaves the negative out, and both ≈ 1 the middle too (an empty side predicts 0)."""
    if nested or always_uncond or not math.isclose(cfg2, 1.0):
        return [positive, negative, middle]
    return [positive, [], [] if math.isclose(cfg1, 1.0) else middle]


def dual_cfg(positive, negative, middle, cfg1: float, cfg2: float, nested: bool, keep: dict, cfg_function):
    """Guider_DualCFG: regular, CFG(middle vs negative, cfg2) + cfg1·(positive − middle); nested,
    the negative + cfg2·(CFG(positive vs middle, cfg1) − negative)."""
    if nested:
        keep["uncond"] = middle
        return negative + cfg2 * (cfg_function(positive, middle, cfg1) - negative)
    keep["uncond"] = negative
    return cfg_function(middle, negative, cfg2) + (positive - middle) * cfg1


def cfg_denoiser(predict: BatchPredictor, positive: list[CondEntry], negative: list[CondEntry], cfg: float,
                 ms: DiscreteSampling, always_uncond: bool = False, rescale: float | None = None,
                 post_cfg: tuple = (), attention=lambda: None, perp_neg: tuple | None = None,
                 dual: tuple | None = None, pre_cfg: tuple = ()) -> Guided:
    """CFG over both sides; with cfg ≈ 1 the negative is skipped unless `always_uncond`.
    `rescale`: RescaleCFG's multiplier; `post_cfg`: the model's post-CFG steps in order
    (post_cfg.py), `attention` the map SAG reads; `perp_neg`: PerpNegGuider's (empty prompt
    entries, neg_scale), a third side always evaluated, or the PerpNeg patch's (entries,
    neg_scale, False), whose negative CFG 1 leaves out; `dual`: DualCFGGuider's (middle entries, cfg2, nested),
    with `cfg` its cfg1 (dual_cfg); `pre_cfg`: the model's pre-CFG steps in order (pre_cfg.py),
    which the guiders with their own formula (PerpNegGuider, DualCFGGuider) skip, as ComfyUI's do."""
    always_uncond = always_uncond or any(step.needs_negative for step in post_cfg)
    if dual is not None:
        given = _dual_sides(positive, negative, dual[0], cfg, dual[1], dual[2], always_uncond)
    elif perp_neg is not None:
        # the patch is a cfg function: at CFG 1 ComfyUI leaves the negative out, which predicts 0
        skipped = len(perp_neg) > 2 and not perp_neg[2] and math.isclose(cfg, 1.0) and not always_uncond
        given = [positive, [] if skipped else negative, perp_neg[0]]
    elif math.isclose(cfg, 1.0) and not always_uncond:
        given = [positive]
    else:
        given = [positive, negative]
    prepared: dict[tuple, list[list[CondEntry]]] = {}
    keep: dict[str, torch.Tensor] = {}
    negative_skipped = math.isclose(cfg, 1.0) and not always_uncond
    if dual is not None or (perp_neg is not None and len(perp_neg) < 3):
        pre_cfg = ()
    pre_cfg_states: list[dict] = [{} for _ in pre_cfg]  # a step's running values, for this run

    def evaluate(sides: list[list[CondEntry]], x: torch.Tensor, sigma: torch.Tensor, **options) -> list[torch.Tensor]:
        """Each side's prediction: its active entries' weighted mean (calc_cond_batch)."""
        jobs = []
        for side, entries in enumerate(sides):
            for entry in entries:
                if _active(entry, float(sigma.max()), ms):
                    area, mult = _weights(entry, x)
                    jobs.append(_Job(side, entry, area, mult))
        totals = [torch.zeros_like(x) for _ in sides]
        counts = [torch.full_like(x, 1e-37) for _ in sides]
        batch = x.shape[0]
        for group in _batches(jobs):
            h, w = group[0].area[:2]
            crops = [x[:, :, job.area[2]:job.area[2] + h, job.area[3]:job.area[3] + w] for job in group]
            entries = [job.entry for job in group for _ in range(batch)]
            areas = [job.area for job in group for _ in range(batch)]
            out = predict(torch.cat(crops), sigma.repeat(len(group)), entries, areas, **options)
            for job, part in zip(group, out.chunk(len(group))):
                y, x0 = job.area[2], job.area[3]
                totals[job.side][:, :, y:y + h, x0:x0 + w] += part * job.mult
                counts[job.side][:, :, y:y + h, x0:x0 + w] += job.mult
        return [total / count for total, count in zip(totals, counts)]

    def combine(cond, uncond, scale, x, sigma):
        """ComfyUI's cfg_function: RescaleCFG's or plain CFG; at scale 1 the conditional side as it
        is, unless the negative must be evaluated anyway (CFG++ samplers, SAG)."""
        if math.isclose(scale, 1.0) and not always_uncond:
            return cond
        if rescale is not None:
            return rescaled_cfg(cond, uncond, scale, x, sigma, rescale)
        return uncond + (cond - uncond) * scale

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape[-2:])
        if shape not in prepared:
            if len(given) > 1:
                prepared[shape] = sides = _with_same_areas(given, *shape)
                _lend(sides[0], sides[1], "control", lambda e: e.control_apply_to_uncond)
                _lend(sides[0], sides[1], "gligen", lambda e: True)
            else:
                prepared[shape] = [[_resolved(e, *shape) for e in side] for side in given]
        sides = prepared[shape]
        results = evaluate(sides, x, sigma)
        if pre_cfg:  # on [positive, negative], the negative zeros where CFG 1 left it out
            pair = results[:2] if len(results) > 1 else [results[0], torch.zeros_like(x)]
            for step, state in zip(pre_cfg, pre_cfg_states):
                pair = step(PreCfgArgs(pair, not negative_skipped, cfg, x, sigma), state)
            results = pair + results[2:]
        if dual is not None:
            guided = dual_cfg(*results, cfg, dual[1], dual[2], keep,
                              lambda cond, uncond, scale: combine(cond, uncond, scale, x, sigma))
        elif len(results) == 1:
            guided = results[0]
        elif len(results) == 3:  # ComfyUI's PerpNegGuider takes no cfg function (RescaleCFG)
            keep["uncond"] = results[1]
            guided = perpendicular_cfg(*results, cfg, perp_neg[1])
        else:
            keep["uncond"] = results[1]
            guided = combine(results[0], results[1], cfg, x, sigma)
        if post_cfg:
            args = PostCfgArgs(guided, results[0], results[1] if len(results) > 1 else torch.zeros_like(x), cfg,
                               x, sigma, lambda: evaluate(sides[:1], x, sigma, perturbed=True)[0],
                               lambda other: evaluate(sides[1:2], other, sigma)[0], attention)
            for step in post_cfg:
                args.denoised = step(args)
            guided = args.denoised
        return guided

    return Guided(denoise, keep)
