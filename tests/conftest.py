from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quhao.broker import Mosquitto
from simulators.idcard import PcscStack
from tests.helpers import Device, hall_daemon


@pytest.fixture(scope="session")
def pcsc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscStack]:
    """pcscd with vpcd virtual readers, for the whole session (one pcscd per machine)."""
    stack = PcscStack(tmp_path_factory.mktemp("pcscd")).start()
    yield stack
    stack.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(workdir=tmp_path / "broker") as running:
        yield running


@pytest.fixture
def hall(broker: Mosquitto, tmp_path: Path) -> Iterator:
    daemon = hall_daemon(broker.url, tmp_path / "hall").start()
    yield daemon
    daemon.stop()


@pytest.fixture
def device(broker: Mosquitto) -> Iterator:
    opened: list[Device] = []

    def open_device(name: str) -> Device:
        opened.append(Device(broker.url, name))
        return opened[-1]

    yield open_device
    for dev in opened:
        dev.close()
