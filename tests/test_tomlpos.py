"""tomlpos: every key path maps to the line where the key is written.

Example cases for each construct, then a property: random TOML documents (tables,
arrays of tables nested by index, dotted and quoted keys, multi-line strings whose
lines look like headers and keys, arrays and inline tables, comments) are rendered
with the line of every key noted, and every path tomllib sees must map to that line.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quhao.tomlpos import Path, key_lines, line_of


def lines_of(text: str) -> dict[Path, int]:
    tomllib.loads(text)  # the cases are valid TOML, as in use (tomllib parses first)
    return key_lines(text)


def test_headers_keys_and_arrays_of_tables_by_index() -> None:
    text = """\
top = 1
[site]
id = "x"
[[services]]
id = "a"
quota = { tickets = 2, hours = 2 }
[[services]]
id = "b"
[services.quota]
tickets = 3
"""
    lines = lines_of(text)
    assert lines[("top",)] == 1
    assert lines[("site",)] == 2 and lines[("site", "id")] == 3
    assert lines[("services",)] == 4 and lines[("services", 0)] == 4
    assert lines[("services", 0, "quota", "tickets")] == 6
    assert lines[("services", 1)] == 7 and lines[("services", 1, "id")] == 8
    assert lines[("services", 1, "quota")] == 9
    assert lines[("services", 1, "quota", "tickets")] == 10


def test_nested_arrays_of_tables_count_under_their_parent() -> None:
    text = """\
[[a]]
x = 1
[[a.b]]
y = 1
[[a.b]]
y = 2
[[a]]
[[a.b]]
y = 3
"""
    lines = lines_of(text)
    assert lines[("a", 0, "b", 0, "y")] == 4
    assert lines[("a", 0, "b", 1, "y")] == 6
    assert lines[("a", 1)] == 7
    assert lines[("a", 1, "b", 0)] == 8 and lines[("a", 1, "b", 0, "y")] == 9


def test_multiline_strings_hold_no_headers_or_keys() -> None:
    text = '''\
[texts]
notice = """
[queue]
max_recalls = 5
[[services]]
"""
note = \'\'\'
[fake]
id = "x"
\'\'\'
quoted = """he said ""hi""\\"""\"
after = 1
[queue]
max_recalls = 2
'''
    lines = lines_of(text)
    assert lines[("texts", "after")] == 12
    assert lines[("queue",)] == 13 and lines[("queue", "max_recalls")] == 14
    assert ("services",) not in lines and ("texts", "fake") not in lines
    assert ("texts", "max_recalls") not in lines


def test_multiline_arrays_and_inline_tables() -> None:
    text = """\
levels = [
  "KEY_1",  # a comment with [brackets] and k = v
  "]",
  { a = 1, b = "}" },
]
t = { x.y = 1, z = [1, 2] }
next = 2
"""
    lines = lines_of(text)
    assert lines[("levels",)] == 1
    assert lines[("levels", 0)] == 2 and lines[("levels", 1)] == 3
    assert lines[("levels", 2, "b")] == 4
    assert lines[("t", "x", "y")] == 6 and lines[("t", "z", 1)] == 6
    assert lines[("next",)] == 7


def test_quoted_and_dotted_keys() -> None:
    text = """\
"a.b" = 1
site . "my name" . 'x.y' = 2
"\\u4e2d" = 3
["quoted.table"]
k = 4
"""
    lines = lines_of(text)
    assert lines[("a.b",)] == 1
    assert lines[("site",)] == 2 and lines[("site", "my name", "x.y")] == 2
    assert lines[("中",)] == 3
    assert lines[("quoted.table", "k")] == 5


def test_a_path_not_written_falls_back_to_its_nearest_parent() -> None:
    lines = lines_of("[site]\nid = 'x'\n[[services]]\nid = 'a'\n")
    assert line_of(lines, ("services", 0, "quota", "tickets")) == 3
    assert line_of(lines, ("site", "name")) == 1
    assert line_of(lines, ("nowhere",)) is None


# ---- the property -----------------------------------------------------------------

KEYS = ["a", "b", "id", "name", "x-y", "k_1", "a.b", "x y", "[h]", "k = v", "中文", "#", "it's"]
TABLES = ["t0", "t1", "t.q", "t 2"]
ARRAYS = ["arr", "list.x"]
SUBS = ["sub", "more"]
# Lines inside multi-line strings that look like TOML structure.
BASIC_LINES = [
    "[fake]",
    "[[fake.table]]",
    'key = "value"',
    "  a.b = 1",
    "# not a comment",
    "'''",
    'he said ""hi""',
    "{ x = 1 }",
    "]",
    "tab\\tend",
    "\\\\server\\\\share",
    "continued \\",
]
LITERAL_LINES = ["[fake]", "k = 'v'", '"""', "\\not an escape", "# x", "[[a.b]]", "z = 1"]
COMMENTS = ["# a comment", "# [section] in a comment", "# k = v", "#"]


def _key(part: str, literal: bool) -> str:
    if re.fullmatch(r"[A-Za-z0-9_-]+", part):
        return part
    if literal and "'" not in part:
        return f"'{part}'"
    return json.dumps(part, ensure_ascii=False)


@dataclass
class Doc:
    """A rendered document and the line of every path tomllib will see."""

    lines: list[str] = field(default_factory=list)
    expected: dict[Path, int] = field(default_factory=dict)

    def add(self, text: str) -> int:
        self.lines.append(text)
        return len(self.lines)

    def mark(self, path: Path, line: int) -> None:
        for end in range(1, len(path) + 1):
            self.expected.setdefault(path[:end], line)


def scalars() -> st.SearchStrategy[tuple[str, str]]:
    tricky = "[]{}=#,. ab\\中"
    return st.one_of(
        st.integers(-1000, 1000).map(lambda n: ("int", str(n))),
        st.text(alphabet=tricky + "'\"", max_size=8).map(
            lambda s: ("str", json.dumps(s, ensure_ascii=False))
        ),
        st.text(alphabet=tricky + '"', max_size=8).map(lambda s: ("str", f"'{s}'")),
        st.sampled_from([("str", "true"), ("str", "1979-05-27 07:32:00Z"), ("str", "-1.5e3")]),
    )


@st.composite
def keyvals(draw: st.DrawFn, values: st.SearchStrategy[Any], most: int = 3) -> list[Any]:
    """Keys unique by their first part (a dotted key's first part is a table)."""
    pairs = []
    for first in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=most)):
        keys = (first,) if draw(st.booleans()) else (first, draw(st.sampled_from(KEYS)))
        pairs.append((keys, draw(values)))
    return pairs


def one_line_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda items: ("arr", items, False)),
            keyvals(inner, most=3).map(lambda items: ("inline", items)),
        ),
        max_leaves=4,
    )


def values() -> st.SearchStrategy[Any]:
    return st.one_of(
        one_line_values(),
        st.lists(st.sampled_from(BASIC_LINES), max_size=5).map(lambda ls: ("mlb", ls)),
        st.lists(st.sampled_from(LITERAL_LINES), max_size=5).map(lambda ls: ("mll", ls)),
        st.lists(st.one_of(one_line_values(), st.sampled_from(COMMENTS)), max_size=4).map(
            lambda items: ("arr", items, True)
        ),
    )


def render_value(value: Any, literal: bool) -> tuple[list[str], list[tuple[Path, int]]]:
    """The value's lines (the first follows `key = `) and its inner paths by line offset."""
    kind = value[0]
    if kind in ("int", "str"):
        return [value[1]], []
    if kind == "mlb":
        return ['"""', *value[1], 'end"""'], []
    if kind == "mll":
        return ["'''", *value[1], "end'''"], []
    if kind == "inline":
        parts, marks = [], []
        for keys, inner in value[1]:
            text, inner_marks = render_value(inner, literal)
            parts.append(f"{'.'.join(_key(k, literal) for k in keys)} = {text[0]}")
            marks += [(keys, 0)] + [((*keys, *p), 0) for p, _ in inner_marks]
        return ["{ " + ", ".join(parts) + " }" if parts else "{}"], marks
    items, multiline = value[1], value[2]
    if not multiline:
        texts, marks = [], []
        for i, item in enumerate(items):
            text, inner_marks = render_value(item, literal)
            texts.append(text[0])
            marks += [((i,), 0)] + [((i, *p), 0) for p, _ in inner_marks]
        return ["[" + ", ".join(texts) + "]"], marks
    lines, marks, index = ["["], [], 0
    for item in items:
        if isinstance(item, str):  # a comment line between elements
            lines.append("  " + item)
            continue
        text, inner_marks = render_value(item, literal)
        marks += [((index,), len(lines))] + [((index, *p), len(lines) + o) for p, o in inner_marks]
        lines += ["  " + text[0] + ",  # after an element [x]", *text[1:]]
        index += 1
    return [*lines, "]"], marks


@st.composite
def documents(draw: st.DrawFn) -> Doc:
    doc = Doc()
    literal = draw(st.booleans())

    def blank() -> None:
        for _ in range(draw(st.integers(0, 2))):
            doc.add(draw(st.sampled_from(["", *COMMENTS])))

    def write(table: Path, pairs: list[tuple[tuple[str, ...], Any]]) -> None:
        for keys, value in pairs:
            blank()
            text, marks = render_value(value, literal)
            key = (
                " . ".join(_key(k, literal) for k in keys)
                if draw(st.booleans())
                else ".".join(_key(k, literal) for k in keys)
            )
            line = doc.add(f"{key} = {text[0]}" + draw(st.sampled_from(["", "  # [x] k = v"])))
            for rest in text[1:]:
                doc.add(rest)
            doc.mark((*table, *keys), line)
            for path, offset in marks:
                doc.mark((*table, *keys, *path), line + offset)

    def header(names: tuple[str, ...], array: bool) -> int:
        text = ".".join(_key(n, literal) for n in names)
        return doc.add(f"[[{text}]]" if array else f"[ {text} ]")

    write((), draw(keyvals(values())))
    for name in draw(st.lists(st.sampled_from(TABLES), unique=True, max_size=2)):
        blank()
        doc.mark((name,), header((name,), array=False))
        write((name,), draw(keyvals(values())))
        if draw(st.booleans()):
            doc.mark((name, "sub"), header((name, "sub"), array=False))
            write((name, "sub"), draw(keyvals(values())))
    for name in draw(st.lists(st.sampled_from(ARRAYS), unique=True, max_size=2)):
        for index in range(draw(st.integers(1, 2))):
            blank()
            doc.mark((name, index), header((name,), array=True))
            write((name, index), draw(keyvals(values())))
            for sub in draw(st.lists(st.sampled_from(SUBS), unique=True, max_size=1)):
                for inner in range(draw(st.integers(1, 2))):
                    doc.mark((name, index, sub, inner), header((name, sub), array=True))
                    write((name, index, sub, inner), draw(keyvals(values())))
    return doc


def paths(value: Any, prefix: Path = ()) -> list[Path]:
    found: list[Path] = []
    if isinstance(value, dict):
        items: list[tuple[str | int, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return found
    for key, inner in items:
        found.append((*prefix, key))
        found += paths(inner, (*prefix, key))
    return found


@settings(max_examples=200, deadline=None)
@given(documents())
def test_every_path_tomllib_sees_maps_to_its_line(doc: Doc) -> None:
    text = "\n".join(doc.lines) + "\n"
    parsed = tomllib.loads(text)
    found = key_lines(text)
    for path in paths(parsed):
        assert found.get(path) == doc.expected[path], (path, text)
