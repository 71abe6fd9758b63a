"""vbw streaming runtime. Importable without torch."""

__version__ = "0.1.0"
