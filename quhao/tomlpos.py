"""Where each key of a TOML document was written, so errors can name the line.

tomllib reports syntax errors with a line but forgets positions once parsed.
This scanner reads the same (already parsed, so valid) text again and records the
line of every key path: table headers, arrays of tables by index (nested ones
under their parent's latest element), plain, quoted and dotted keys, the keys of
inline tables and the elements of arrays. It steps over strings of every kind —
a `[x]` or `k = v` inside a multi-line string is text, not a header or a key.
A path not found falls back to its nearest parent (`line_of`).
"""

from __future__ import annotations

Path = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_SCALAR_END = frozenset(",]}\n#")


def key_lines(text: str) -> dict[Path, int]:
    """Map each key path (tables as names, arrays of tables by index) to its 1-based line.

    The first place a path appears wins: a table made by a dotted key or a header's
    parent maps to where it was first named."""
    scanner = _Scanner(text)
    scanner.document()
    return scanner.lines


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of path, or of its nearest ancestor that was written down."""
    for end in range(len(path), 0, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[Path, int] = {}
        self.array_counts: dict[Path, int] = {}  # arrays of tables: elements seen so far

    # ---- the document -------------------------------------------------------

    def document(self) -> None:
        table: Path = ()
        while self._skip_blank(newlines=True):
            start = self.pos
            if self._peek(2) == "[[":
                table = self._header(array=True)
            elif self._peek() == "[":
                table = self._header(array=False)
            else:
                self._keyval(table)
            if self.pos == start:  # never stall on text this scanner does not know
                self._advance(1)

    def _header(self, *, array: bool) -> Path:
        line = self.line
        self._advance(2 if array else 1)
        names = self._key()
        self._skip_blank(newlines=False)
        self._advance(2 if array else 1)
        base = self._resolve(names)
        self._mark_parents(base, line)
        if not array:
            self._mark(base, line)
            return base
        index = self.array_counts.get(base, 0)
        self.array_counts[base] = index + 1
        self._mark(base, line)
        self._mark((*base, index), line)
        return (*base, index)

    def _resolve(self, names: list[str]) -> Path:
        """`[a.b]` or `[[a.b]]` under `[[a]]` belongs to a's latest element."""
        resolved: list[str | int] = []
        for position, name in enumerate(names):
            resolved.append(name)
            count = self.array_counts.get(tuple(resolved))
            if count and position < len(names) - 1:
                resolved.append(count - 1)
        return tuple(resolved)

    def _keyval(self, table: Path) -> None:
        line = self.line
        path = (*table, *self._key())
        self._mark_parents(path, line, since=len(table))
        self._mark(path, line)
        self._skip_blank(newlines=False)
        if self._peek() == "=":
            self._advance(1)
        self._skip_blank(newlines=False)
        self._value(path)

    # ---- values -------------------------------------------------------------

    def _value(self, path: Path) -> None:
        ahead = self._peek(3)
        if ahead in ('"""', "'''"):
            self._multiline_string(ahead)
        elif ahead[:1] in ('"', "'"):
            self._string()
        elif ahead[:1] == "[":
            self._array(path)
        elif ahead[:1] == "{":
            self._inline_table(path)
        else:  # number, boolean, date or time (a date-time may hold a space)
            while self.pos < len(self.text) and self.text[self.pos] not in _SCALAR_END:
                self._advance(1)

    def _array(self, path: Path) -> None:
        self._advance(1)
        index = 0
        while self._skip_blank(newlines=True):
            char = self._peek()
            if char == "]":
                self._advance(1)
                return
            if char == ",":
                self._advance(1)
                continue
            start = self.pos
            self._mark((*path, index), self.line)
            self._value((*path, index))
            index += 1
            if self.pos == start:
                self._advance(1)

    def _inline_table(self, path: Path) -> None:
        self._advance(1)
        while self._skip_blank(newlines=True):
            char = self._peek()
            if char == "}":
                self._advance(1)
                return
            if char == ",":
                self._advance(1)
                continue
            start = self.pos
            self._keyval(path)
            if self.pos == start:
                self._advance(1)

    # ---- keys and strings ---------------------------------------------------

    def _key(self) -> list[str]:
        """A simple or dotted key: bare parts, "basic" and 'literal' quoted parts."""
        parts: list[str] = []
        while True:
            self._skip_blank(newlines=False)
            char = self._peek()
            if char in ('"', "'"):
                parts.append(self._string())
            else:
                start = self.pos
                while self.pos < len(self.text) and self.text[self.pos] in _BARE:
                    self.pos += 1
                if self.pos == start:
                    return parts
                parts.append(self.text[start : self.pos])
            self._skip_blank(newlines=False)
            if self._peek() != ".":
                return parts
            self._advance(1)

    def _string(self) -> str:
        """A one-line string; its value (keys may be quoted strings with escapes)."""
        quote = self._peek()
        self._advance(1)
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == quote or char == "\n":
                self._advance(1)
                break
            if char == "\\" and quote == '"':
                out.append(self._escape())
                continue
            out.append(char)
            self.pos += 1
        return "".join(out)

    def _escape(self) -> str:
        code = self.text[self.pos + 1 : self.pos + 2]
        if code in ("u", "U"):
            width = 4 if code == "u" else 8
            digits = self.text[self.pos + 2 : self.pos + 2 + width]
            self.pos += 2 + width
            try:
                return chr(int(digits, 16))
            except ValueError:
                return ""
        self.pos += 2
        return _ESCAPES.get(code, code)

    def _multiline_string(self, delimiter: str) -> None:
        self._advance(3)
        while self.pos < len(self.text):
            if self.text.startswith(delimiter, self.pos):
                self._advance(3)
                # Up to two quotes right before the closing ones belong to the string.
                extra = 0
                while extra < 2 and self._peek() == delimiter[0]:
                    self._advance(1)
                    extra += 1
                return
            if delimiter == '"""' and self.text[self.pos] == "\\":
                self._advance(2)  # an escaped quote or backslash (or a line-ending backslash)
                continue
            self._advance(1)

    # ---- plumbing -----------------------------------------------------------

    def _skip_blank(self, *, newlines: bool) -> bool:
        """Step over spaces and comments (and line ends if asked); False at the end."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r" or (newlines and char == "\n"):
                self._advance(1)
            elif char == "#":
                while self.pos < len(self.text) and self.text[self.pos] != "\n":
                    self.pos += 1
            else:
                return True
        return False

    def _peek(self, count: int = 1) -> str:
        return self.text[self.pos : self.pos + count]

    def _advance(self, count: int) -> None:
        end = min(self.pos + count, len(self.text))
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def _mark(self, path: Path, line: int) -> None:
        self.lines.setdefault(path, line)

    def _mark_parents(self, path: Path, line: int, since: int = 0) -> None:
        """Tables a header or dotted key creates on the way appear on its line."""
        for end in range(max(since, 1), len(path)):
            self._mark(path[:end], line)
