"""ComfyUI's text utilities (utils/string): concatenate, cut, measure, change case, trim,
replace, test and regular expressions, on STRING values."""
from __future__ import annotations

import re
from typing import Literal

from engine import Node, Widget

from .primitives import BooleanOut, IntOut, StringOut

CATEGORY = "utils/string"


def _flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    return ((re.IGNORECASE if case_insensitive else 0) | (re.MULTILINE if multiline else 0)
            | (re.DOTALL if dotall else 0))


class StringConcatenate(Node):
    class_type = "StringConcatenate"
    display_name = "Concatenate"
    category = CATEGORY

    string_a: str = Widget("", multiline=True)
    string_b: str = Widget("", multiline=True)
    delimiter: str = Widget("")

    def execute(self, ctx) -> StringOut:
        return StringOut(self.delimiter.join((self.string_a, self.string_b)))


class StringSubstring(Node):
    """Python's slice string[start:end]: negative positions count from the end."""

    class_type = "StringSubstring"
    display_name = "Substring"
    category = CATEGORY

    string: str = Widget("", multiline=True)
    start: int = Widget(0)
    end: int = Widget(0)

    def execute(self, ctx) -> StringOut:
        return StringOut(self.string[self.start:self.end])


class StringLength(Node):
    class_type = "StringLength"
    display_name = "Length"
    category = CATEGORY
    output_names = ("length",)

    string: str = Widget("", multiline=True)

    def execute(self, ctx) -> IntOut:
        return IntOut(len(self.string))


class CaseConverter(Node):
    class_type = "CaseConverter"
    display_name = "Case Converter"
    category = CATEGORY

    string: str = Widget("", multiline=True)
    mode: Literal["UPPERCASE", "lowercase", "Capitalize", "Title Case"] = Widget("UPPERCASE")

    def execute(self, ctx) -> StringOut:
        convert = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize,
                   "Title Case": str.title}[self.mode]
        return StringOut(convert(self.string))


class StringTrim(Node):
    class_type = "StringTrim"
    display_name = "Trim"
    category = CATEGORY

    string: str = Widget("", multiline=True)
    mode: Literal["Both", "Left", "Right"] = Widget("Both")

    def execute(self, ctx) -> StringOut:
        trim = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}[self.mode]
        return StringOut(trim(self.string))


class StringReplace(Node):
    class_type = "StringReplace"
    display_name = "Replace"
    category = CATEGORY

    string: str = Widget("", multiline=True)
    find: str = Widget("", multiline=True)
    replace: str = Widget("", multiline=True)

    def execute(self, ctx) -> StringOut:
        return StringOut(self.string.replace(self.find, self.replace))


class StringContains(Node):
    class_type = "StringContains"
    display_name = "Contains"
    category = CATEGORY
    output_names = ("contains",)

    string: str = Widget("", multiline=True)
    substring: str = Widget("", multiline=True)
    case_sensitive: bool = Widget(True)

    def execute(self, ctx) -> BooleanOut:
        if self.case_sensitive:
            return BooleanOut(self.substring in self.string)
        return BooleanOut(self.substring.lower() in self.string.lower())


class StringCompare(Node):
    class_type = "StringCompare"
    display_name = "Compare"
    category = CATEGORY

    string_a: str = Widget("", multiline=True)
    string_b: str = Widget("", multiline=True)
    mode: Literal["Starts With", "Ends With", "Equal"] = Widget("Starts With")
    case_sensitive: bool = Widget(True)

    def execute(self, ctx) -> BooleanOut:
        a, b = (self.string_a, self.string_b) if self.case_sensitive else (self.string_a.lower(), self.string_b.lower())
        return BooleanOut({"Equal": a == b, "Starts With": a.startswith(b), "Ends With": a.endswith(b)}[self.mode])


class RegexMatch(Node):
    """Whether the pattern occurs anywhere in the string (an invalid pattern matches nothing)."""

    class_type = "RegexMatch"
    display_name = "Regex Match"
    category = CATEGORY
    output_names = ("matches",)

    string: str = Widget("", multiline=True)
    regex_pattern: str = Widget("", multiline=True)
    case_insensitive: bool = Widget(True)
    multiline: bool = Widget(False)
    dotall: bool = Widget(False)

    def execute(self, ctx) -> BooleanOut:
        try:
            found = re.search(self.regex_pattern, self.string,
                              _flags(self.case_insensitive, self.multiline, self.dotall))
        except re.error:
            found = None
        return BooleanOut(found is not None)


class RegexExtract(Node):
    """The first match, every match, or a group of the first or of every match, joined by
    newlines (an invalid pattern gives "")."""

    class_type = "RegexExtract"
    display_name = "Regex Extract"
    category = CATEGORY

    string: str = Widget("", multiline=True)
    regex_pattern: str = Widget("", multiline=True)
    mode: Literal["First Match", "All Matches", "First Group", "All Groups"] = Widget("First Match")
    case_insensitive: bool = Widget(True)
    multiline: bool = Widget(False)
    dotall: bool = Widget(False)
    group_index: int = Widget(1, ge=0, le=100)

    def execute(self, ctx) -> StringOut:
        flags = _flags(self.case_insensitive, self.multiline, self.dotall)
        try:
            return StringOut(self._extract(flags))
        except re.error:
            return StringOut("")

    def _extract(self, flags: int) -> str:
        pattern, text, group = self.regex_pattern, self.string, self.group_index
        if self.mode == "First Match":
            match = re.search(pattern, text, flags)
            return match.group(0) if match else ""
        if self.mode == "All Matches":
            # with groups, findall gives tuples: ComfyUI keeps each one's first group
            return "\n".join(m[0] if isinstance(m, tuple) else m for m in re.findall(pattern, text, flags))
        if self.mode == "First Group":
            match = re.search(pattern, text, flags)
            return match.group(group) if match and len(match.groups()) >= group else ""
        return "\n".join(m.group(group) for m in re.finditer(pattern, text, flags)
                         if m.groups() and len(m.groups()) >= group)


class RegexReplace(Node):
    """re.sub with the flags; count 0 replaces every occurrence."""

    class_type = "RegexReplace"
    display_name = "Regex Replace"
    category = CATEGORY

    string: str = Widget("", multiline=True)
    regex_pattern: str = Widget("", multiline=True)
    replace: str = Widget("", multiline=True)
    case_insensitive: bool = Widget(True, optional=True)
    multiline: bool = Widget(False, optional=True)
    dotall: bool = Widget(False, optional=True)
    count: int = Widget(0, ge=0, le=100, optional=True)

    def execute(self, ctx) -> StringOut:
        return StringOut(re.sub(self.regex_pattern, self.replace, self.string, count=self.count,
                                flags=_flags(self.case_insensitive, self.multiline, self.dotall)))
