"""The top of the layers: the `quhao` command, the demo, the benchmarks and the chaos run.

Layers point one way: this package may import the daemons (`hall`, `kiosk`, `counter`),
the simulators and the shared core (`quhao`); nothing below imports from here. The
contract is in pyproject.toml (`[tool.importlinter]`) and tests/test_layers.py checks it.
"""
