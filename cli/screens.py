"""`quhao screens`: the hall board, window screens and ticket pages (screens/)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import signal

from quhao.clock import Clock
from quhao.config import SiteConfig
from quhao.sdnotify import Notifier

log = logging.getLogger("quhao")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", help="address to serve on (default [screens] listen)")
    parser.add_argument("--port", type=int, help="HTTP port (default [screens] port)")


def run_screens(config: SiteConfig, args: argparse.Namespace) -> int:
    return asyncio.run(_serve(config, args))


async def _serve(config: SiteConfig, args: argparse.Namespace) -> int:
    from screens.daemon import ScreensDaemon

    # One file descriptor per connected phone: a busy hall has thousands.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    daemon = ScreensDaemon(
        config,
        args.broker,
        Clock.parse(args.clock),
        args.credentials,
        listen=args.listen,
        port=args.port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await daemon.start()
    notifier = Notifier()
    notifier.watch("screens", lambda: daemon.heartbeat)
    notifier.ready(f"http://{daemon.listen}:{daemon.port}/board")
    notifier.start_watchdog()
    await stop.wait()
    log.info("stopping the screens")
    notifier.stopping()
    await daemon.stop()
    return 0
