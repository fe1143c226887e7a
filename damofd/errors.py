"""User-facing error types.

Library code raises a subclass of :class:`DamoFDError` (usually also a ``ValueError``) for bad
input; the message names the file, line, argument or block at fault. The CLI prints such errors
as one line and exits with status 2 (set ``DAMOFD_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

__all__ = ["ConfigError", "DamoFDError", "InputError"]


class DamoFDError(Exception):
    """Base class of every error caused by user input rather than by a bug."""


class InputError(DamoFDError, ValueError):
    """A file, value or argument given by the user is invalid."""


class ConfigError(DamoFDError, ValueError):
    """A configuration (model name, preset, proxy, option combination) is invalid."""
