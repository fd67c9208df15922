"""The package version, in one place every layer can import."""

__version__ = "0.1.0"
