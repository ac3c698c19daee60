"""The wire layer: sans-I/O framing, proteins, and vesicles."""
