"""ComfyUI's lists (execution.py's map over lists), apart from tensor batches.

A node whose inputs hold ItemLists runs once per item: run i takes item i of each list, a shorter
list repeating its last item, plain values given to every run. A node that takes whole lists
(`input_is_list`) runs once, every input a list (a plain value as a list of one). The runs'
results are merged slot by slot: an `output_is_list` slot's lists are joined, any other slot
collects one value per run. A list of one item is the item itself, as in ComfyUI.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .node import ItemList, NodeOutput


def as_value(items: list) -> Any:
    """One item as itself, anything else as an ItemList."""
    return items[0] if len(items) == 1 else ItemList(items)


def run_over_lists(cls, values: dict[str, Any], call: Callable[[dict[str, Any]], NodeOutput],
                   before_each: Callable[[], None]) -> NodeOutput:
    """Call `call` with the inputs of each run and merge what the runs return."""
    if cls.input_is_list:
        whole = {name: list(value) if isinstance(value, ItemList) else [value] for name, value in values.items()}
        return merge(cls, [call(whole)])
    lists = {name: value for name, value in values.items() if isinstance(value, ItemList)}
    if not lists:
        return merge(cls, [call(values)])
    empty = sorted(name for name, value in lists.items() if not value)
    if empty:
        raise ValueError(f"input {empty[0]} is an empty list: there is nothing to run the node on")
    results = []
    for i in range(max(len(value) for value in lists.values())):
        before_each()
        results.append(call({name: value[min(i, len(value) - 1)] if isinstance(value, ItemList) else value
                             for name, value in values.items()}))
    return merge(cls, results)


def merge(cls, results: list[NodeOutput]) -> NodeOutput:
    """The runs' results as one output: slots per `output_is_list`, side information (the files
    an output node wrote) joined in run order."""
    first = results[0]
    slots = iter(cls.spec.output_is_list)
    merged = {}
    for field in dataclasses.fields(first):
        if not field.init:
            continue
        per_run = [getattr(result, field.name) for result in results]
        if field.metadata.get("slot", True):
            if next(slots):
                merged[field.name] = as_value([item for value in per_run for item in value])
            else:
                merged[field.name] = as_value(per_run)
        elif all(isinstance(value, tuple) for value in per_run):
            merged[field.name] = tuple(item for value in per_run for item in value)
        else:
            merged[field.name] = per_run[-1]
    return dataclasses.replace(first, **merged)
