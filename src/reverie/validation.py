"""Reporting a pydantic ValidationError so that a person can act on it: the key, where it was set, the value
given and what is allowed; and finding each key's line in a YAML (or JSON, which is YAML) file for that."""

from __future__ import annotations

from typing import Any, Callable, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

SHOWN_VALUE_CHARS = 60
KeyPath = tuple[str, ...]
T = TypeVar("T")


def parse_yaml(text: str) -> tuple[Any, dict[KeyPath, int], list[str]]:
    """The document, the 1-based line of each key path (list items by index), and a problem per repeated key:
    YAML would let the last one win silently, undoing the first without a word. Raises yaml.YAMLError."""
    lines: dict[KeyPath, int] = {}
    repeats: list[str] = []

    def walk(node: yaml.Node, prefix: KeyPath, above: frozenset[int]) -> None:
        if id(node) in above:  # a recursive anchor ends here
            return
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*prefix, str(index))] = item.start_mark.line + 1
                walk(item, (*prefix, str(index)), above | {id(node)})
        if not isinstance(node, yaml.MappingNode):
            return
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            path, line = (*prefix, str(key.value)), key.start_mark.line + 1
            if key.value in first:
                repeats.append(f"{'.'.join(path)} (lines {first[key.value]} and {line}): duplicate key; keep one "
                               "(otherwise the later value silently replaces the earlier)")
            first.setdefault(key.value, line)
            lines[path] = line
            walk(value, path, above | {id(node)})

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, lines, repeats
        walk(root, (), frozenset())  # before constructing: construction flattens merge keys into the mappings
        return loader.construct_document(root), lines, repeats
    finally:
        loader.dispose()


def model_at(root: type[BaseModel], loc: KeyPath) -> type[BaseModel] | None:
    """The model whose keys sit at `loc` inside `root` (through dicts and lists), for listing allowed keys."""
    node: Any = root
    for part in loc:
        if get_origin(node) in (dict, list):
            node = get_args(node)[-1]
        elif isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = node.model_fields[part].annotation
        else:
            return None
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def describe_errors(error: ValidationError, root: type[BaseModel],
                    place: Callable[[KeyPath], str] = lambda loc: "") -> list[str]:
    """One line per problem: `key (place): what is wrong`, where `place` says where the key was set."""
    out = []
    for item in error.errors():
        loc = tuple(str(part) for part in item["loc"])
        where = ".".join(loc) or "(top level)"
        where += f" ({at})" if (at := place(loc)) else ""
        if item["type"] == "missing":
            out.append(f"{where}: required key is missing")
        elif item["type"] == "extra_forbidden":
            model = model_at(root, loc[:-1])
            allowed = f" (allowed: {', '.join(model.model_fields)})" if model else ""
            out.append(f"{where}: unknown key{allowed}")
        else:
            shown = "" if isinstance(item["input"], (dict, list)) else repr(item["input"])
            shown = shown[:SHOWN_VALUE_CHARS] + ("..." if len(shown) > SHOWN_VALUE_CHARS else "")
            out.append(f"{where}: {f'got {shown}; ' if shown else ''}{item['msg'].removeprefix('Value error, ')}")
    return out


def brief(error: ValidationError) -> str:
    """All problems on one line, for a quarantine reason: `text: …; prompt: …`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg'].removeprefix('Value error, ')}"
                     for e in error.errors())


def nearest(found: dict[KeyPath, T], loc: KeyPath) -> T | None:
    """What `found` holds for `loc` or the nearest key enclosing it (a line, a --set argument)."""
    return next((found[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in found), None)
