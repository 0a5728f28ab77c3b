"""Parse a user's YAML and JSON with bounds: a small file must not grow into gigabytes or a traceback.

* YAML aliases share one object, so a 1 kB file of nested aliases ("billion laughs") loads fast
  but expands to ~10^9 nodes as soon as anything walks it (a config's hash, a deep copy).
  :func:`load_yaml` measures the expanded size and refuses a document over :data:`MAX_YAML_NODES`.
* JSON nested thousands deep ends Python's parser in ``RecursionError``; :func:`loads_json` turns
  that into one :class:`~workbench.errors.WorkbenchError` line.

Example:
    >>> load_yaml("a: &x [1, 2]\\nb: *x\\n")
    {'a': [1, 2], 'b': [1, 2]}
    >>> load_yaml("a: &a [1,1,1,1,1,1,1,1,1,1]\\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\\n"
    ...           "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\\n"
    ...           "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]", "bomb.yaml")
    Traceback (most recent call last):
    ...
    workbench.errors.WorkbenchError: bomb.yaml: YAML expands to more than 100000 values through its aliases (&/*); write the values out
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import WorkbenchError

MAX_YAML_NODES = 100_000  # a real config or ST yaml has hundreds; anchors' lists count each time used


def load_yaml(text: str | bytes, path: str | Path | None = None) -> Any:
    """``yaml.safe_load(text)``, refused if its aliases expand it past :data:`MAX_YAML_NODES` values.

    Raises ``yaml.YAMLError`` for a syntax error (as ``yaml.safe_load``), :class:`WorkbenchError`
    for a document too large once expanded.
    """
    data = yaml.safe_load(text)
    if _expanded_size_exceeds(data, MAX_YAML_NODES):
        raise WorkbenchError(
            f"YAML expands to more than {MAX_YAML_NODES} values through its aliases (&/*); write the values out",
            path=path,
        )
    return data


def _expanded_size_exceeds(data: Any, limit: int) -> bool:
    """Whether walking ``data`` as a tree (shared objects counted each time) visits over ``limit`` nodes.

    Stops as soon as it passes ``limit``, so the walk itself is bounded.
    """
    count = 0
    stack = [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
    return False


MAX_JSON_DEPTH = 512  # far beyond any COCO or metadata file; below what the C parser's stack takes
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_depth(data: bytes) -> int:
    """The deepest nesting of ``[`` / ``{`` in JSON text (strings skipped), counted without parsing:
    the C parser can exhaust the C stack (a segfault, not a ``RecursionError``) on deep input when a
    library has raised Python's recursion limit."""
    import numpy as np

    codes = np.frombuffer(_JSON_STRING.sub(b'""', data), np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int32) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def loads_json(text: str | bytes, path: str | Path | None = None) -> Any:
    """``json.loads``, refusing nesting deeper than :data:`MAX_JSON_DEPTH` with one error naming ``path``.

    ``json.JSONDecodeError`` passes through (callers word it themselves).
    """
    data = text.encode() if isinstance(text, str) else bytes(text)
    if json_depth(data) > MAX_JSON_DEPTH:
        raise WorkbenchError(f"JSON nested too deeply to read (over {MAX_JSON_DEPTH} levels)", path=path)
    try:
        return json.loads(data)
    except RecursionError:
        raise WorkbenchError("JSON nested too deeply to read", path=path) from None


def load_json_file(fh, path: str | Path | None = None) -> Any:
    """``json.load(fh)`` with :func:`loads_json`'s depth limit."""
    return loads_json(fh.read(), path)
