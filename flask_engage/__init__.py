"""flask-engage: customer data, self-maintaining segments, broadcasts and automations
inside your Flask app."""

from __future__ import annotations

from .errors import EngageError
from .extension import Engage

__version__ = "0.1.0"

__all__ = ["Engage", "EngageError", "__version__"]
