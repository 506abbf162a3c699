"""Device plumbing shared by kiosk and counter: device URIs, input events, key sources."""
