"""Where each key of a TOML document was written, so errors can name the line.

tomllib reports syntax errors with a line but forgets positions once parsed.
This scanner reads the same text again and records the line of every key path
it can see: table headers, arrays of tables, plain and dotted keys, and keys of
one-line inline tables. A path not found falls back to its nearest parent.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*\[\[\s*([^\]]+?)\s*\]\]|^\s*\[\s*([^\]]+?)\s*\]")
_KEY = re.compile(
    r'^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\'))*)\s*=\s*(.*)$'
)
_INLINE_KEY = re.compile(r'(?:^|[{,])\s*([A-Za-z0-9_-]+|"[^"]*")\s*=')


def _split_dotted(key: str) -> list[str]:
    parts = re.findall(r'"[^"]*"|\'[^\']*\'|[^.\s]+', key)
    return [p.strip("\"'") for p in parts]


def key_lines(text: str) -> dict[Path, int]:
    """Map each key path (tables as names, arrays of tables by index) to its 1-based line."""
    lines: dict[Path, int] = {}
    array_counts: dict[Path, int] = {}
    current: Path = ()
    depth = 0  # open brackets of a multi-line value: its lines hold no keys
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw)
        if depth > 0:
            depth += _bracket_balance(line)
            continue
        header = _HEADER.match(line)
        if header:
            is_array = header.group(1) is not None
            names = _split_dotted(header.group(1) or header.group(2))
            base = _resolve(tuple(names), array_counts)
            if is_array:
                index = array_counts.get(base, 0)
                array_counts[base] = index + 1
                lines.setdefault(base, lineno)
                current = (*base, index)
            else:
                current = base
            lines.setdefault(current, lineno)
            continue
        match = _KEY.match(line)
        if match:
            path = (*current, *_split_dotted(match.group(1)))
            lines.setdefault(path, lineno)
            value = match.group(2)
            if value.lstrip().startswith("{"):
                for sub in _INLINE_KEY.findall(value):
                    lines.setdefault((*path, sub.strip('"')), lineno)
            depth = max(0, _bracket_balance(value))
    return lines


def _resolve(names: Path, array_counts: dict[Path, int]) -> Path:
    """A header like [services.quota] inside [[services]] refers to the latest element."""
    resolved: list[str | int] = []
    for name in names:
        resolved.append(name)
        count = array_counts.get(tuple(resolved))
        if count and name != names[-1]:
            resolved.append(count - 1)
    return tuple(resolved)


def _strip_comment(line: str) -> str:
    out, quote = [], ""
    for ch in line:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        out.append(ch)
    return "".join(out)


def _bracket_balance(text: str) -> int:
    balance, quote = 0, ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            balance += 1
        elif ch in "]}":
            balance -= 1
    return balance


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of path, or of its nearest ancestor that was written down."""
    for end in range(len(path), 0, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None
