"""The hall: the one authority over the queue (engine + SQLite store + MQTT service)."""
