"""The kiosk's own card reader: the GA 467 SAM module on a serial port.

The PC/SC reader and what readers deliver (`CardRead`) are shared with the counter
and live in the device layer: `quhao.devices.pcsc`, `quhao.devices.cards`.
"""
