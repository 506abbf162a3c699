"""LED window displays. A vendor's protocol is one module registered in PROTOCOLS."""

from __future__ import annotations

from counter.led.base import LedProtocol
from counter.led.quhao_led import QuhaoLed

PROTOCOLS: dict[str, type[LedProtocol]] = {QuhaoLed.name: QuhaoLed}


def protocol_named(name: str) -> LedProtocol:
    try:
        return PROTOCOLS[name]()
    except KeyError:
        raise ValueError(f"unknown LED protocol {name!r} (known: {', '.join(PROTOCOLS)})") from None
