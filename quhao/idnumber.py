"""Citizen ID numbers (GB 11643-1999): check character, birth date, masking. Pure.

An 18-character number: 6-digit region, 8-digit birth date, 3-digit sequence,
and a check character from ISO 7064 MOD 11-2 ('0'-'9' or 'X'). The same rule
holds for Hong Kong/Macau/Taiwan residence permits (83/81/82…) and the 2023
foreign permanent residence ID (9…).
"""

from __future__ import annotations

from datetime import date

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"


class InvalidIdNumber(ValueError):
    pass


def check_char(first17: str) -> str:
    return CHECK_CHARS[sum(int(c) * w for c, w in zip(first17, WEIGHTS, strict=True)) % 11]


def validate(number: str) -> str:
    """The number, normalised (upper-case X), or InvalidIdNumber saying why.

    The message never repeats the number: it may end up in a log.
    """
    number = number.strip().upper()
    if len(number) != 18:
        raise InvalidIdNumber(f"an ID number has 18 characters, not {len(number)}")
    if not number[:17].isdigit() or not (number[17].isdigit() or number[17] == "X"):
        raise InvalidIdNumber("an ID number is 17 digits and a digit or X")
    if birth_date(number) is None:
        raise InvalidIdNumber("the birth date in the ID number is not a date")
    if check_char(number[:17]) != number[17]:
        raise InvalidIdNumber("the check character does not match (GB 11643 MOD 11-2)")
    return number


def birth_date(number: str) -> date | None:
    try:
        return date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return None


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def mask(number: str) -> str:
    """First 6 and last 4 shown at most: 440104********123X."""
    if len(number) <= 10:
        return "*" * len(number)
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


def with_check(first17: str) -> str:
    """A valid number from its first 17 digits (for simulators and tests)."""
    return first17 + check_char(first17)
