"""ComfyUI's prompt syntax: `(text)` ×1.1 per level, `(text:w)` sets w, `\\(` `\\)` are literal
parentheses. `[text]`, `BREAK` and `AND` are plain text. Pure string handling, no tokenizer."""
from __future__ import annotations

_ESCAPED = {"\\(": "\0\1", "\\)": "\0\2"}


def _escape(text: str) -> str:
    for plain, hidden in _ESCAPED.items():
        text = text.replace(plain, hidden)
    return text


def unescape(text: str) -> str:
    return text.replace("\0\1", "(").replace("\0\2", ")")


def _top_level_groups(text: str) -> list[str]:
    """Split into plain runs and outermost `( … )` groups. An unclosed group stays plain text,
    and a stray `)` only closes what was opened."""
    parts, current, depth = [], "", 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                parts.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                parts.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        parts.append(current)
    return parts


def _weighted(text: str, weight: float) -> list[tuple[str, float]]:
    out = []
    for part in _top_level_groups(text):
        if len(part) >= 2 and part[0] == "(" and part[-1] == ")":
            inner, inner_weight = part[1:-1], weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out += _weighted(inner, inner_weight)
        else:
            out.append((part, weight))
    return out


def weighted_segments(prompt: str) -> list[tuple[str, float]]:
    """[(text, weight)] in order, escapes resolved."""
    return [(unescape(text), weight) for text, weight in _weighted(_escape(prompt), 1.0)]
