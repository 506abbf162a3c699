"""`quhao chaos`: the hall under kills, floods of malformed requests and broken storage.

`run_chaos(Plan())` is `make chaos`; `Plan.short()` is the version `make test` runs.
See `cli.chaos.run` for the phases and `cli.chaos.check` for what is asserted.
"""

from cli.chaos.run import ChaosResult, Plan, run_chaos

__all__ = ["ChaosResult", "Plan", "run_chaos"]
