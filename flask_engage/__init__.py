"""flask-engage: customer data, self-maintaining segments, broadcasts and automations
inside your Flask app."""

from __future__ import annotations

from .config import VERSION as __version__
from .errors import EngageError
from .extension import Engage

__all__ = ["Engage", "EngageError", "__version__"]
