"""The ComfyUI frontend's dynamic prompts, applied when a UI workflow is queued: `//` and `/* */`
comments are removed, `{a|b|c}` picks one option (nested groups too), `\{ \} \|` become plain
characters, and other escapes (`\(`) pass through for the prompt parser. Only inputs a node declares
`dynamicPrompts` get this, and only when they come from a UI workflow: API prompts have been
through it already.

The frontend draws with Math.random; here the draw is seeded from the text, so a saved
workflow runs the same prompt every time.
"""
from __future__ import annotations

import hashlib
import random
import re

_COMMENTS = re.compile(r"/\*[\s\S]*?\*/|//.*")
_ESCAPED_SYNTAX = re.compile(r"\\([{}|])")  # \{ \} \| become plain; \( \) stay for the prompt parser


def process_dynamic_prompt(text: str, rng: random.Random | None = None) -> str:
    if rng is None:
        rng = random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))
    source = _COMMENTS.sub("", text)
    position = 0

    def choice_block() -> str:
        nonlocal position
        options, current, depth = [], "", 0
        while position < len(source):
            char = source[position]
            position += 1
            if char == "\\":
                current += "\\" + source[position:position + 1]
                position += 1
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                if not depth:
                    break
                depth -= 1
            elif char == "|" and not depth:
                options.append(current)
                current = ""
                continue
            current += char
        options.append(current)
        return process_dynamic_prompt(rng.choice(options), rng)

    out = ""
    while position < len(source):
        char = source[position]
        position += 1
        if char == "\\":
            out += "\\" + source[position:position + 1]
            position += 1
        elif char == "{":
            out += choice_block()
        else:
            out += char
    return _ESCAPED_SYNTAX.sub(r"\1", out)
