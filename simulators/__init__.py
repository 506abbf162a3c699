"""Device simulators: each speaks its device's real wire protocol, never our drivers' API."""
