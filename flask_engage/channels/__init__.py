"""Channels: email, web push, in-app messages and webhooks, in one registry (:mod:`.base`).

Importing this package registers the built-in channels, in the order forms list them.
"""

from __future__ import annotations

from .base import (
    Channel,
    DeliveryFailed,
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
from .webhook import WebhookChannel
from .webpush import WebPushChannel

register(EmailChannel())
register(WebPushChannel())
register(InAppChannel())
register(WebhookChannel())

__all__ = [
    "Channel",
    "DeliveryFailed",
    "Outgoing",
    "RetryLater",
    "SkipMessage",
    "all_channels",
    "channel_names",
    "get_channel",
    "opt_out_channels",
    "register",
]
