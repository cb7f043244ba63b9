"""Turn pydantic's validation errors into the one line a user reads:

    <file>: <key.path>: expected <what>, found <value>

The file is the layer that set the key (see ``layers.origin_of``). Union branches
(``device: none | {loop, mkfs}``) are folded into one message.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import annotated_types as at
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from vexfs_cockpit.config.show import num, show

_EXPECT = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "path_type": "a path",
}
_RANGE = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


@dataclass(slots=True)
class _Located:
    keys: tuple[str, ...]  # the key path in the user's data
    union_at: int | None  # len(keys) where a union branch was chosen, if any
    branch: str | None  # that branch's tag ("LoopDevice", "literal['none']")
    parent: type[BaseModel] | None  # model holding the last key (for unknown keys)
    field: FieldInfo | None  # the field at the key path (for ranges)
    target: Any  # the type expected at the end of loc (a branch's model for model_type)
    error: Mapping[str, Any]


def _union_members(ann: Any) -> list[Any] | None:
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return [m for m in typing.get_args(ann) if m is not type(None)]
    return None


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _locate(root: type[BaseModel], error: Mapping[str, Any]) -> _Located:
    keys: list[str] = []
    union_at: int | None = None
    branch: str | None = None
    parent: type[BaseModel] | None = None
    field: FieldInfo | None = None
    ann: Any = root
    for el in error["loc"]:
        members = _union_members(ann)
        if members is not None and len(members) == 1:
            ann = members[0]  # Optional[X]: pydantic adds no branch tag
            members = None
        if members is not None:
            union_at, branch = len(keys), str(el)
            ann = next((m for m in members if _is_model(m) and m.__name__ == el), Any)
            continue
        if _is_model(ann):
            parent = ann
            field = ann.model_fields.get(str(el))
            ann = field.annotation if field is not None else Any
        elif typing.get_origin(ann) is dict:
            parent, field, ann = None, None, typing.get_args(ann)[1]
        elif typing.get_origin(ann) is list:
            parent, field, ann = None, None, typing.get_args(ann)[0]
        else:
            parent, field, ann = None, None, Any
        keys.append(str(el))
    return _Located(tuple(keys), union_at, branch, parent, field, ann, error)


def _range_text(loc: _Located) -> str:
    err = loc.error
    meta = loc.field.metadata if loc.field is not None else []
    bounds: dict[str, float] = {}
    for m in meta:
        for attr in ("gt", "ge", "lt", "le"):
            if isinstance(m, getattr(at, attr.capitalize())):
                bounds[attr] = getattr(m, attr)
    for attr in ("gt", "ge", "lt", "le"):
        if attr in err.get("ctx", {}):
            bounds.setdefault(attr, err["ctx"][attr])
    noun = "an integer" if loc.field is not None and loc.field.annotation is int else "a number"
    if "ge" in bounds and "le" in bounds:
        return f"{noun} from {num(bounds['ge'])} to {num(bounds['le'])}"
    parts = [f"{sym} {num(bounds[a])}" for a, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if a in bounds]
    return f"{noun} {' and '.join(parts)}"


def _model_shape(model: type[BaseModel]) -> str:
    return f"a mapping with {', '.join(model.model_fields)}"


def _expected(loc: _Located) -> str:
    err = loc.error
    kind = err["type"]
    if kind in _RANGE:
        return _range_text(loc)
    if kind == "literal_error":
        return f"one of {err['ctx']['expected']}" if " or " in err["ctx"]["expected"] else err["ctx"]["expected"]
    if kind == "string_pattern_mismatch":
        desc = f" ({loc.field.description})" if loc.field is not None and loc.field.description else ""
        return f"a string matching {err['ctx']['pattern']}{desc}"
    return _EXPECT.get(kind, str(err["msg"]).removeprefix("Input should be ").lower())


def _suggest_key(loc: _Located, root: type[BaseModel]) -> str:
    bad = loc.keys[-1]
    valid = list(loc.parent.model_fields) if loc.parent is not None else []
    close = difflib.get_close_matches(bad, valid, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    # Right key, wrong section: e.g. retry_count under resources.
    for name, f in root.model_fields.items():
        if _is_model(f.annotation) and bad in f.annotation.model_fields and name != loc.keys[0]:
            return f" (it belongs under '{name}:')"
    return f" (valid keys: {', '.join(valid)})" if valid else ""


def _one_line(loc: _Located, root: type[BaseModel]) -> str:
    err = loc.error
    dotted = ".".join(loc.keys)
    if err["type"] == "extra_forbidden":
        return f"{dotted}: unknown key '{loc.keys[-1]}'{_suggest_key(loc, root)}"
    if err["type"] == "missing":
        return f"{dotted}: missing required key '{loc.keys[-1]}'"
    return f"{dotted}: expected {_expected(loc)}, found {show(err.get('input'))}"


def _fold_unions(located: list[_Located]) -> list[_Located | tuple[_Located, list[_Located]]]:
    """Errors of one union value become one item: the deeper branch errors if the value
    went into a branch (a mapping checked as LoopDevice), else all branches together."""
    out: list[_Located | tuple[_Located, list[_Located]]] = []
    groups: dict[tuple[str, ...], list[_Located]] = {}
    for loc in located:
        if loc.union_at is None:
            out.append(loc)
            continue
        head = loc.keys[: loc.union_at]
        if head not in groups:
            groups[head] = []
            out.append((loc, groups[head]))
        groups[head].append(loc)
    result: list[_Located | tuple[_Located, list[_Located]]] = []
    for item in out:
        if isinstance(item, _Located):
            result.append(item)
            continue
        members = item[1]
        head_len = len(item[0].keys[: item[0].union_at])
        deeper = [m for m in members if len(m.keys) > head_len and m.error["type"] != "model_type"]
        if deeper:
            result.extend(deeper)
        else:
            result.append((members[0], members))
    return result


def _union_line(first: _Located, members: list[_Located]) -> str:
    options: list[str] = []
    for m in members:
        if m.error["type"] == "model_type":
            options.append(_model_shape(m.target) if _is_model(m.target) else "a mapping")
        else:
            options.append(_expected(m))
    dotted = ".".join(first.keys)
    return f"{dotted}: expected {' or '.join(options)}, found {show(first.error.get('input'))}"


def describe_validation_error(
    exc: ValidationError, root: type[BaseModel], label_for: Callable[[tuple[str, ...]], str]
) -> str:
    """The first problem as one line, prefixed with the file that set the key."""
    located = [_locate(root, e) for e in exc.errors(include_url=False)]
    items = _fold_unions(located)
    first = items[0]
    if isinstance(first, tuple):
        keys, line = first[0].keys, _union_line(*first)
    else:
        keys, line = first.keys, _one_line(first, root)
    more = f" (and {len(items) - 1} more problem{'s' if len(items) > 2 else ''})" if len(items) > 1 else ""
    return f"{label_for(keys)}: {line}{more}"

