"""The example mesh's cells: one package, so every cell shares the protocol module."""
