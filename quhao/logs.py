"""Logging for the daemons: one line per record on stderr (journald adds the time)."""

from __future__ import annotations

import logging
import os
import sys


def setup(level: str = "INFO") -> None:
    with_time = not os.environ.get("INVOCATION_ID")  # under systemd the journal stamps lines
    fmt = ("%(asctime)s " if with_time else "") + "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    logging.getLogger("paho").setLevel(logging.WARNING)
