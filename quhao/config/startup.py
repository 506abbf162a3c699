"""What the daemons refuse at start for configuration reasons, found without starting one.

Loading checks the file itself; `check` checks what the daemons read beyond it: the
site secret (exists, readable, long enough, not the published example unless allowed)
and the device URIs each daemon parses before it opens anything. `quhao check` runs it
for every daemon of the site; `quhao hall`, `quhao kiosk` and `quhao counter` run it for
themselves at start, so the check passes exactly what the daemons accept.

Not checked: whether a device is plugged in (daemons wait for their devices and report
them), staff photos (no daemon reads them: the hall publishes the path as written, for
screens to fetch).
"""

from __future__ import annotations

from collections.abc import Collection

from quhao.config.errors import Problem
from quhao.config.model import SiteConfig, secret_or_problem
from quhao.devices import led
from quhao.devices import uri as uris
from quhao.tomlpos import Path

HALL = "hall"
# The URI schemes each device takes, as the daemons parse them.
READER = ("pcsc", "serial")  # ID card readers: PC/SC or a GA 467 SAM on a serial port
KEYS = ("evdev", "events")  # keypads and rating pads
PRINTER = ("tcp", "serial", "usb")
DISPLAY = ("serial",)
STAFF_READER = ("pcsc",)
NUMBER_PARAMS = ("baud", "addr")  # URI parameters a daemon reads as numbers


def check(config: SiteConfig, devices: Collection[str] | None = None) -> list[Problem]:
    """Problems the daemons would refuse to start with.

    devices: the daemons about to start ("hall", kiosk and counter names); None: every
    daemon of the site. Names the site does not have are left to the daemon to refuse."""
    wanted = {HALL, *config.kiosks, *config.counters} if devices is None else set(devices)
    problems = _secret(config, wanted)
    for i, (name, kiosk) in enumerate(config.kiosks.items()):
        if name in wanted:
            for j, reader in enumerate(kiosk.readers):
                problems += _uri(config, ("kiosks", i, "readers", j), reader, READER)
            problems += _uri(config, ("kiosks", i, "keypad"), kiosk.keypad, KEYS)
            problems += _uri(config, ("kiosks", i, "printer"), kiosk.printer, PRINTER)
    for i, (name, counter) in enumerate(config.counters.items()):
        if name in wanted:
            problems += _uri(config, ("counters", i, "keypad"), counter.keypad, KEYS)
            problems += _uri(config, ("counters", i, "rating"), counter.rating, KEYS)
            problems += _uri(config, ("counters", i, "display"), counter.display, DISPLAY)
            problems += _led_protocol(config, ("counters", i, "display"), counter.display)
            problems += _uri(config, ("counters", i, "reader"), counter.reader, STAFF_READER)
    return problems


def _secret(config: SiteConfig, wanted: set[str]) -> list[Problem]:
    """Kiosks key person pseudonyms with the secret, counters with a staff card reader prove
    cards with it; the hall checks card proofs with it when the site names one."""
    needing = sorted(
        name
        for name in wanted
        if name in config.kiosks or (name in config.counters and config.counters[name].reader)
    )
    if not needing and not (HALL in wanted and config.site.secret_file is not None):
        return []
    found = secret_or_problem(config.site)
    if isinstance(found, bytes):
        return []
    if config.site.secret_file is None:
        shown = ", ".join(needing[:3]) + (
            f" and {len(needing) - 3} more" if len(needing) > 3 else ""
        )
        found = (
            f"not set, and {shown} cannot start without it (make one with "
            "`quhao secret gen --out FILE` and name it here)"
        )
    return [config.problem(("site", "secret_file"), found)]


def _led_protocol(config: SiteConfig, path: Path, text: str) -> list[Problem]:
    try:
        name = uris.parse(text, DISPLAY).params.get("protocol", led.DEFAULT_PROTOCOL)
    except ValueError:
        return []  # no display, or a URI `_uri` already refuses
    if name in led.PROTOCOL_NAMES:
        return []
    known = ", ".join(led.PROTOCOL_NAMES)
    return [config.problem(path, f"unknown LED protocol {name!r} (known: {known})")]


def _uri(config: SiteConfig, path: Path, text: str, schemes: tuple[str, ...]) -> list[Problem]:
    if not text:
        return []  # no such device
    try:
        uri = uris.parse(text, schemes)
        for name in NUMBER_PARAMS:
            uri.int_param(name, 0)
    except ValueError as exc:
        return [config.problem(path, str(exc))]
    return []
