"""flask-engage: customer data, self-maintaining segments, broadcasts and automations
inside your Flask app."""

from __future__ import annotations

# Set before the imports below: modules they load (the OpenAPI document) read it.
__version__ = "0.1.0"

from .errors import EngageError  # noqa: E402
from .extension import Engage  # noqa: E402

__all__ = ["Engage", "EngageError", "__version__"]
