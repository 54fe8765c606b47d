"""taskspace: a ticket becomes a ready developer workspace."""

__version__ = "0.1.0"
