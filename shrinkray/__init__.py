"""Shrinkray: compress large language models as a service."""

__version__ = "0.1.0"
