"""The LED window display protocols a counter speaks, by name.

The codecs live with the counter (`counter.led`); their names live here so that the
configuration check, which knows no application, can refuse a display URI whose
`protocol=` no counter would understand. tests/test_counter_codecs.py keeps the two
lists equal."""

from __future__ import annotations

DEFAULT_PROTOCOL = "quhao-led"
PROTOCOL_NAMES = (DEFAULT_PROTOCOL,)
