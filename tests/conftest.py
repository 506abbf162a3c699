from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quhao.broker import Mosquitto
from simulators.idcard import PORT_ENV, SOCKET_ENV, PcscStack, free_vpcd_port
from tests.helpers import Device, hall_daemon

# Test modules whose tests share one costly module-scoped fixture: all their tests go to
# one worker, so it is made once (the demo's simulated day; the screens' browser and hall).
ONE_WORKER_MODULES = {"tests/test_demo.py", "tests/test_screens.py"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's scheduling, test by test, except that each module of
    ONE_WORKER_MODULES is one unit of work. (What `--dist loadgroup` with an xdist_group
    mark would do, but loadgroup silently stopped grouping under pytest 9.2: it renames
    node ids through a field pytest no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return ModulesTogether(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first (stable otherwise): workers pick tests in this order, and a
    long one started last would keep the whole run waiting after the rest are done."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(scope="session", autouse=True)
def private_pcsc_names(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """This test process's own pcscd socket and vpcd ports, so test processes running
    side by side (pytest-xdist workers) never share a reader. Named in the environment
    because that is where every PC/SC client looks: pcsc-lite in this process (pyscard
    reads it once, at its first call) and in the daemons the tests and the demo start."""
    with pytest.MonkeyPatch.context() as names:
        names.setenv(SOCKET_ENV, str(tmp_path_factory.mktemp("pcsc") / "pcscd.comm"))
        names.setenv(PORT_ENV, str(free_vpcd_port()))
        yield


@pytest.fixture(scope="session")
def pcsc(private_pcsc_names: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscStack]:
    """pcscd with vpcd virtual readers, for the whole session of this test process."""
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
