"""Contracts shared by every layer: graph and tensor names, type aliases, the error base class."""
