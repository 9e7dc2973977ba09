"""Changes around the UNet's self-attentions made with forward hooks, so that they stack on
whatever attention processor runs inside (hypernetworks, PAG, SAG's recorder)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable


@contextmanager
def around_self_attention(unet, split: Callable[[Any], tuple | None], join: Callable[[Any, Any], Any]):
    """For the block, around every transformer block's self-attention (`attn1`): `split(hidden)`
    gives (memo, new hidden states, extra keyword arguments), or None to leave the call alone;
    `join(memo, output)` puts the output back in place."""
    layers = [module.attn1 for module in unet.modules()
              if type(module).__name__ == "BasicTransformerBlock" and module.attn1 is not None]
    pending: list = []  # self-attentions do not nest: one memo per call in flight

    def before(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        found = split(hidden)
        pending.append(found)
        if found is None:
            return None
        memo, changed, extra = found
        rest = {name: value for name, value in kwargs.items() if name != "hidden_states"} | extra
        return (changed, *args[1:]), rest

    def after(module, args, kwargs, out):
        found = pending.pop()
        return None if found is None else join(found[0], out)

    handles = [hook for layer in layers for hook in (layer.register_forward_pre_hook(before, with_kwargs=True),
                                                       layer.register_forward_hook(after, with_kwargs=True))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
