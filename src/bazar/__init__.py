"""Bazar: a replicated multi-tier online bookstore."""

__version__ = "0.1.0"
