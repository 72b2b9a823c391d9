"""JSON from files a user supplies (scores.json, manifests, checkpoint metadata), parsed with its depth bounded.

Python's parser recurses once per nesting level, so `[[[[...]]]]` a hundred thousand levels deep ends
in a RecursionError traceback. Here it is one line naming the file, as is a file too large to be one
this package wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from medclip_ad.errors import UserInputError
from medclip_ad.limits import MAX_JSON_BYTES, MAX_NESTING_DEPTH


def parse_json(text: str, where: object) -> object:
    """`json.loads`, refusing nesting deeper than MAX_NESTING_DEPTH; JSONDecodeError passes through."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise UserInputError(f"{where}: JSON nested too deeply (the limit is {MAX_NESTING_DEPTH} levels)") from None
    if nesting_depth(value) > MAX_NESTING_DEPTH:
        raise UserInputError(f"{where}: JSON nested too deeply (the limit is {MAX_NESTING_DEPTH} levels)")
    return value


def read_json_file(path: Path, what: str) -> object:
    """A JSON file's value, or one line saying why it is not a readable `what`."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise UserInputError(f"{path}: {size:,} bytes, too large for a {what} (the limit is {MAX_JSON_BYTES:,})")
        return parse_json(path.read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: not a readable {what} ({type(error).__name__})") from None
    except json.JSONDecodeError as error:
        raise UserInputError(f"{path}: not a readable {what} (invalid JSON at line {error.lineno}: "
                             f"{error.msg})") from None


def nesting_depth(value: object) -> int:
    """How many containers deep a parsed value goes, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_NESTING_DEPTH:
            stack.extend((child, depth + 1) for child in children)
    return deepest
