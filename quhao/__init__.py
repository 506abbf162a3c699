"""Quhao (取号): shared core — configuration, wire protocol, MQTT adapter, clock, CLI."""

__version__ = "0.1.0"
