"""The toolkit version, importable by every layer without importing the package root (which imports deploy)."""

__version__ = "0.1.0"
