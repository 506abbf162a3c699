"""The person key: HMAC-SHA256(site secret, ID number), the pseudonym that lets the hall
count tickets and find appointments per person without knowing who it is.

Shared by the kiosk (a card or a typed number) and the appointment import (the online
hall's bookings), so both derive the very same key from the same number.
"""

from __future__ import annotations

import hashlib
import hmac


def person_key(secret: bytes, id_number: str) -> str:
    return hmac.new(secret, id_number.upper().encode("ascii"), hashlib.sha256).hexdigest()
