"""The ticket as ESC/POS bytes. Pure: the fields in, the bytes out.

Laid out with python-escpos (its Dummy printer collects the bytes), so sizes,
alignment, the native QR code (GS ( k) and the cut are python-escpos's own
commands. Chinese text is sent the way these printers want it: Chinese mode on
(FS &) and the text as GB18030 bytes — not through python-escpos's code-page
guessing. The whole ticket then goes to the printer in one write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from escpos.printer import Dummy

from quhao.config import TICKET_STYLES

CHINESE_MODE_ON = b"\x1c\x26"  # FS &
TEXT_ENCODING = "gb18030"
SIZES = {"big": 3, "large": 2}
_STYLE = re.compile(r"^\{(" + "|".join(TICKET_STYLES) + r")\}")


def render(lines: tuple[str, ...], fields: Mapping[str, object], qr: str | None) -> bytes:
    """ESC/POS bytes for one ticket (or slip), cut at the end."""
    out = Dummy()
    out.hw("INIT")
    out._raw(CHINESE_MODE_ON)
    for template in lines:
        if template.strip() == "{qr}":
            if qr:
                out.set(align="center")
                out.qr(qr, size=6, native=True)
            continue
        styles, body = _styles(template)
        text = body.format_map(_Blank(fields)).strip()
        if not text and body.strip():
            continue  # a line whose fields are all empty (no priority, say) is left out
        size = max((SIZES[s] for s in styles if s in SIZES), default=1)
        align = next((s for s in styles if s in ("center", "left", "right")), "left")
        out.set(align=align, bold="bold" in styles, custom_size=True, width=size, height=size)
        out._raw(text.encode(TEXT_ENCODING, errors="replace") + b"\n")
    out.set(align="left", bold=False, custom_size=True, width=1, height=1)
    out.cut()
    return bytes(out.output)


def _styles(template: str) -> tuple[set[str], str]:
    styles: set[str] = set()
    while match := _STYLE.match(template):
        styles.add(match.group(1))
        template = template[match.end() :]
    return styles, template


class _Blank(dict[str, object]):
    """Template fields; an unknown or missing one prints as nothing."""

    def __missing__(self, key: str) -> str:
        return ""
