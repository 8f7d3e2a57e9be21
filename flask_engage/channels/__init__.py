"""Channels: email, web push and in-app messages, in one registry (:mod:`.base`).

Importing this package registers the built-in channels, in the order forms list them.
"""

from __future__ import annotations

from .base import (
    Channel,
    Outgoing,
    RetryLater,
    SkipMessage,
    all_channels,
    channel_names,
    get_channel,
    opt_out_channels,
    register,
)
from .email import EmailChannel
from .inapp import InAppChannel
from .webpush import WebPushChannel

register(EmailChannel())
register(WebPushChannel())
register(InAppChannel())

__all__ = [
    "Channel",
    "Outgoing",
    "RetryLater",
    "SkipMessage",
    "all_channels",
    "channel_names",
    "get_channel",
    "opt_out_channels",
    "register",
]
