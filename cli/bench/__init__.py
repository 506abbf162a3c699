"""Benchmarks, each beside a bare baseline measured in the same run (`quhao bench`)."""
