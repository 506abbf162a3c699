"""From a card or a typed number to what may leave the kiosk: a key, an age, a mask.

person.key = HMAC-SHA256(site secret, ID number). The raw number stays here, in
memory, for the moments it takes to compute these three things.

With only a PC/SC reader the kiosk knows the card's serial number, not the
person: the key is then HMAC-SHA256(secret, "uid:" + serial), so the quota counts
per card (a person with a replaced card counts anew), and there is no age, so no
elderly priority.

An age is sent only if it is a living person's, 0 to 130 (the hall refuses any
other): a typed number whose birth date gives another age is refused here as
mistyped; a card's birth date that does is sent as no age.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from quhao import idnumber
from quhao.devices.cards import Identity
from quhao.personkey import person_key

MAX_AGE = 130  # the protocol's bound on person.age
# person_key moved to quhao/personkey.py (the appointment import needs it too)
__all__ = ["MAX_AGE", "Person", "from_identity", "from_number", "from_uid", "person_key"]


def plausible_age(born: date, today: date) -> int | None:
    """Age in whole years on `today`, or None if no living person has it."""
    age = idnumber.age_on(born, today)
    return age if 0 <= age <= MAX_AGE else None


@dataclass(frozen=True)
class Person:
    key: str
    age: int | None
    masked: str  # what the ticket shows
    source: str  # sam | typed | pcsc

    def wire(self) -> dict[str, object]:
        return {"key": self.key, "age": self.age}


def from_number(secret: bytes, number: str, today: date, source: str = "typed") -> Person:
    """A typed or read 18-character number; InvalidIdNumber if it is not valid."""
    number = idnumber.validate(number)
    born = idnumber.birth_date(number)
    age = plausible_age(born, today) if born else None
    if born and age is None:
        raise idnumber.InvalidIdNumber("the birth date in the ID number gives an impossible age")
    return Person(person_key(secret, number), age, idnumber.mask(number), source)


def from_identity(secret: bytes, identity: Identity, today: date) -> Person:
    number = identity.id_number.strip().upper()
    if len(number) == 18:
        person = from_number(secret, number, today, "sam")
    elif identity.card_type == "foreign_permanent" and len(number) == 15 and number.isalnum():
        person = Person(person_key(secret, number), None, idnumber.mask(number), "sam")
    else:
        raise idnumber.InvalidIdNumber(
            "the card's number is neither 18 characters nor a "
            "15-character permanent residence number"
        )
    if identity.birth is not None:
        person = Person(person.key, plausible_age(identity.birth, today), person.masked, "sam")
    return person


def from_uid(secret: bytes, uid: str) -> Person:
    return Person(person_key(secret, f"uid:{uid.upper()}"), None, f"卡号 ****{uid[-4:]}", "pcsc")
