"""Logging for the daemons: one line per record on stderr (journald adds the time)."""

from __future__ import annotations

import logging
import os
import sys


def setup(level: str = "INFO") -> None:
    with_time = not os.environ.get("INVOCATION_ID")  # under systemd the journal stamps lines
    fmt = ("%(asctime)s " if with_time else "") + "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_escpos)

    logging.getLogger("paho").setLevel(logging.WARNING)


def _quiet_escpos(record: logging.LogRecord) -> bool:
    # python-escpos logs every connection at INFO on the root logger: keep its warnings only.
    return record.levelno >= logging.WARNING or "/escpos/" not in record.pathname
