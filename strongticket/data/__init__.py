"""Bundled data sets (shipped as package data; no download needed)."""

from strongticket.data.digits import load_digits

__all__ = ["load_digits"]
