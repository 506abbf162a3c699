"""Proof that a staff member is present: a staff card at the device, or a PIN typed there.

The hall never takes a staff id on a device's word (a kiosk's disk is the easiest thing
in the building to read). A request that needs staff authority carries one of:

- `{"card": proof}` — proof = HMAC-SHA256(site secret, "staff-card:" + card UID), computed
  by the device that read the card; the UID itself never leaves the device;
- `{"staff": "S001", "pin": "4821"}` — the PIN typed on the device's keypad, checked by the
  hall against the PBKDF2 hash in the site file (`quhao staff pin` makes one).

Pure functions; the hall's engine calls `StaffAuthority` while deciding a request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Protocol

PIN_SCHEME = "pbkdf2-sha256"
PIN_ITERATIONS = 60_000  # ~30 ms per check here: slows guessing, never felt at a window
PIN_PATTERN = re.compile(r"^[0-9]{4,12}$")
PIN_HASH_PATTERN = re.compile(
    r"^pbkdf2-sha256\$[0-9]{4,7}\$[A-Za-z0-9+/=]{16,64}\$[A-Za-z0-9+/=]{40,64}$"
)
CARD_PROOF_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def staff_id_for(staff_ids: Iterable[str], typed: str) -> str | None:
    """A typed staff number: the exact id, or the id's digits (S007 ← 7, 007, S007)."""
    ids = list(staff_ids)
    if typed in ids:
        return typed
    wanted = re.sub(r"\D", "", typed)
    if not wanted:
        return None
    for staff_id in ids:
        digits = re.sub(r"\D", "", staff_id)
        if digits and int(digits) == int(wanted):
            return staff_id
    return None


class StaffLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def cards(self) -> tuple[str, ...]: ...
    @property
    def pin_hash(self) -> str: ...


def card_proof(secret: bytes, uid: str) -> str:
    """What a device sends for a staff card: a keyed hash of its UID, never the UID."""
    message = b"staff-card:" + uid.strip().upper().encode("ascii")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def hash_pin(pin: str, *, salt: bytes | None = None, iterations: int = PIN_ITERATIONS) -> str:
    if not PIN_PATTERN.fullmatch(pin):
        raise ValueError("a PIN is 4 to 12 digits")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode("ascii"), salt, iterations)
    return "$".join(
        (
            PIN_SCHEME,
            str(iterations),
            base64.b64encode(salt).decode("ascii"),
            base64.b64encode(digest).decode("ascii"),
        )
    )


def verify_pin(pin: str, encoded: str) -> bool:
    """True only for the right PIN; a malformed hash or PIN is simply wrong."""
    if not PIN_PATTERN.fullmatch(pin) or not PIN_HASH_PATTERN.fullmatch(encoded):
        return False
    _, rounds, salt, digest = encoded.split("$")
    try:
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.pbkdf2_hmac(
            "sha256", pin.encode("ascii"), base64.b64decode(salt, validate=True), int(rounds)
        )
    except ValueError:
        return False
    return hmac.compare_digest(expected, actual)


class StaffAuthority:
    """Answers "which staff member proved presence here?" from the site's staff list."""

    def __init__(self, staff: Mapping[str, StaffLike], secret: bytes | None) -> None:
        self.staff = staff
        self._by_card: dict[str, str] = {}
        if secret is not None:
            for member in staff.values():
                for uid in member.cards:
                    self._by_card[card_proof(secret, uid)] = member.id

    def by_card(self, proof: str) -> str | None:
        """The staff id whose card gave this proof, or None."""
        if not CARD_PROOF_PATTERN.fullmatch(proof):
            return None
        for known, staff_id in self._by_card.items():
            if hmac.compare_digest(known, proof):
                return staff_id
        return None

    def by_pin(self, staff_id: str, pin: str) -> str | None:
        """The staff id if this is that member's PIN, or None (also when no PIN is set)."""
        member = self.staff.get(staff_id)
        if member is None or not member.pin_hash:
            return None
        return staff_id if verify_pin(pin, member.pin_hash) else None
