"""PC/SC card reader through pcscd (pyscard): the card's UID, once per presentation.

URI: `pcsc://` (the first reader) or `pcsc://?reader=Virtual%20PCD%2000%2000` (a
reader whose name starts with that). A card is noticed the moment pcscd sees it
(SCardGetStatusChange, no polling); its serial number is read with the ID card's
APDU `00 36 00 00 08` (falling back to the PC/SC `FF CA 00 00 00`). pcscd going
away, or the reader being unplugged, is reported and waited out.

One presentation, one read (`quhao.devices.presence`): a card left on the reader
is read once. pcscd's reader state can flicker (SCARD_STATE_EMPTY for a moment,
often for just one of its polls), so a card counts as removed only after the
reader has been EMPTY for `absent_s` without a break. Every time pcscd reports a
card (it counts insertions in the upper 16 bits of the event state, so a quick
swap between two reports is seen too) its serial number is read and compared with
the held card's by a keyed digest: the same card within `absent_s` is not
delivered again; a different card is. A card held when pcscd or the reader went
away is still held when it comes back (silence is not absence).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from smartcard import scard

from quhao.devices import uri as uris
from quhao.devices.cards import CardRead
from quhao.devices.presence import DEFAULT_ABSENT_S, Fingerprints, Presence
from quhao.devices.state import DeviceState

log = logging.getLogger("quhao.pcsc")

GET_ID_CARD_SERIAL = [0x00, 0x36, 0x00, 0x00, 0x08]
GET_UID = [0xFF, 0xCA, 0x00, 0x00, 0x00]
WAIT_MS = 500
RETRY_S = 1.0


class PcscReader:
    def __init__(
        self,
        uri: str,
        label: str,
        on_card: Callable[[CardRead], None],
        on_state: Callable[[str, str], None] | None = None,
        *,
        absent_s: float = DEFAULT_ABSENT_S,
        clock: Callable[[], float] = time.monotonic,
        on_noticed: Callable[[], None] | None = None,
    ) -> None:
        """`absent_s`: how long the reader must be EMPTY before the card counts as
        removed; `clock`: monotonic seconds (injectable for tests); `on_noticed`: called
        when a card is seen, before it is read (what a ticket needs can be readied
        meanwhile)."""
        self.uri = uris.parse(uri, ("pcsc",))
        self.wanted = self.uri.params.get("reader", "")
        self.label = label
        self.on_card = on_card
        self.on_noticed = on_noticed
        self.health = DeviceState("reader", label, log, on_state)
        self.presence = Presence(absent_s)
        self.clock = clock
        self._fingerprints = Fingerprints()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            rc, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if rc != scard.SCARD_S_SUCCESS:
                self.health.set("offline", f"pcscd: {scard.SCardGetErrorMessage(rc)}")
                stop.wait(RETRY_S)
                continue
            try:
                self._watch(context, stop)
            finally:
                scard.SCardReleaseContext(context)

    def _reader_name(self, context: int) -> str | None:
        rc, names = scard.SCardListReaders(context, [])
        if rc != scard.SCARD_S_SUCCESS:
            return None
        return next((n for n in names if n.startswith(self.wanted)), None)

    def _watch(self, context: int, stop: threading.Event) -> None:
        name = self._reader_name(context)
        if name is None:
            self.health.set("offline", f"no reader {self.wanted or ''}".strip())
            stop.wait(RETRY_S)
            return
        self.health.set("ok", name)
        known = scard.SCARD_STATE_UNAWARE
        present, empty, insertions = False, False, -1
        while not stop.is_set():
            rc, states = scard.SCardGetStatusChange(context, WAIT_MS, [(name, known)])
            if rc == scard.SCARD_E_TIMEOUT:
                if empty:
                    self.presence.absent(self.clock())  # still empty: a held card may expire
                continue
            if rc != scard.SCARD_S_SUCCESS:
                self.health.set("offline", f"reader lost: {scard.SCardGetErrorMessage(rc)}")
                return  # a new context and a new look for the reader
            _, event_state, _ = states[0]
            known = event_state & ~scard.SCARD_STATE_CHANGED
            if event_state & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_UNAVAILABLE):
                self.health.set("offline", "reader unplugged")
                return
            now_present = bool(event_state & scard.SCARD_STATE_PRESENT)
            empty = bool(event_state & scard.SCARD_STATE_EMPTY) and not now_present
            count = event_state >> 16  # pcsc-lite: card insertions and removals so far
            if empty:
                self.presence.absent(self.clock())
            elif now_present and (not present or count != insertions):
                self._card_there(context, name)
            present, insertions = now_present, count

    def _card_there(self, context: int, name: str) -> None:
        detected_at = time.monotonic()
        if self.on_noticed is not None:
            self.on_noticed()
        uid = self._read_uid(context, name)
        now = self.clock()
        if uid is None:
            self.presence.present(now)  # a card, but which one is unknown
        elif self.presence.identified(self._fingerprints.of(uid.encode()), now):
            self.on_card(
                CardRead(self.label, uid=uid, detected_at=detected_at, read_at=time.monotonic())
            )
        else:
            log.debug("%s: the same card, back after a dropout: not read again", self.label)

    def _read_uid(self, context: int, name: str) -> str | None:
        rc, card, protocol = scard.SCardConnect(
            context,
            name,
            scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
        )
        if rc != scard.SCARD_S_SUCCESS:
            log.warning(
                "%s: card present but cannot connect: %s",
                self.label,
                scard.SCardGetErrorMessage(rc),
            )
            return None
        try:
            for apdu in (GET_ID_CARD_SERIAL, GET_UID):
                rc, response = scard.SCardTransmit(card, protocol, apdu)
                if rc == scard.SCARD_S_SUCCESS and len(response) > 2 and response[-2:] == [0x90, 0]:
                    return bytes(response[:-2]).hex().upper()
            log.warning("%s: the card gave no serial number", self.label)
            return None
        finally:
            scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
