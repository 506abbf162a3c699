"""The top of the layers: the `quhao` command, the demo, the benchmarks and the chaos run.

Nothing below imports from here. See docs/architecture.md (Layers).
"""
