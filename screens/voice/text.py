"""What an announcement says: pure text from a template (no I/O, no clock).

Ticket numbers are read character by character — letters as letters, digits as
零一二三四五六七八九 ("A001" → "A 零零一"), so "001" is never "one" or "O-O-one";
window numbers are read as numbers (5 → 五, 12 → 十二, 41 → 四十一).
"""

from __future__ import annotations

import unicodedata

DIGITS = "零一二三四五六七八九"
# Units of a four-digit group, and the groups above it (万, 亿).
_UNITS = ("", "十", "百", "千")
_GROUPS = ("", "万", "亿")
MAX_SPOKEN_NUMBER = 10**12 - 1


def spoken_digits(number: str) -> str:
    """A ticket number as it is read out: runs of letters spelt one by one, runs of digits
    as Chinese digits, runs separated by a space ("AB12" → "A B 一二"). Anything else
    (punctuation, spaces) is left out; other scripts (汉字) are kept as they are."""
    runs: list[str] = []
    kind = ""
    for char in unicodedata.normalize("NFKC", number):  # full-width Ａ０ are A0
        if char.isascii() and char.isalpha():
            runs.append(char.upper())
            kind = "letter"
        elif unicodedata.category(char) == "Nd":  # any script's decimal digit
            digit = DIGITS[unicodedata.digit(char)]
            if kind == "digit":
                runs[-1] += digit
            else:
                runs.append(digit)
            kind = "digit"
        elif unicodedata.category(char).startswith("L"):
            if kind == "other":
                runs[-1] += char
            else:
                runs.append(char)
            kind = "other"
        else:
            kind = ""
    return " ".join(runs)


def _group(n: int) -> str:
    """0 < n < 10000 read naturally, without the 一 before 十 (that is the caller's)."""
    out: list[str] = []
    zero = False
    for power in (3, 2, 1, 0):
        digit = n // 10**power % 10
        if digit == 0:
            zero = bool(out)  # a zero between read digits is said once: 一百零一
            continue
        if zero:
            out.append("零")
            zero = False
        out.append(DIGITS[digit] + _UNITS[power])
    return "".join(out)


def spoken_number(n: int) -> str:
    """A whole number read naturally: 5 五, 10 十, 12 十二, 20 二十, 41 四十一, 101 一百零一,
    110 一百一十, 10005 一万零五."""
    if not 0 <= n <= MAX_SPOKEN_NUMBER:
        raise ValueError(f"cannot read {n} (0 to {MAX_SPOKEN_NUMBER})")
    if n == 0:
        return "零"
    groups = []
    rest, index = n, 0
    while rest:
        groups.append((rest % 10000, index))
        rest //= 10000
        index += 1
    out: list[str] = []
    for i, (value, group) in enumerate(reversed(groups)):
        if value == 0:
            continue
        if out and (value < 1000 or groups[len(groups) - i][0] == 0):
            out.append("零")  # a gap before this group: 一万零五
        out.append(_group(value) + _GROUPS[group])
    text = "".join(out).replace("零零", "零")
    # 10–19 are 十, 十一 … not 一十, 一十一 (but 一百一十 keeps its 一).
    return text[1:] if text.startswith("一十") else text


def announcement(template: str, number: str, window: int, service: str = "") -> str:
    """The text one announcement speaks: the template with the number spelt, the window
    read as a number and the service's name; spaces collapsed."""
    text = template.format(
        number=spoken_digits(number), window=spoken_number(window), service=service
    )
    return " ".join(text.split())
