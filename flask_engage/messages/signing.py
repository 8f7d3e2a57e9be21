"""Signed tokens as itsdangerous's ``URLSafeSerializer(secret, salt).dumps`` writes
them, made with the key derived once per secret and salt.

A broadcast signs two or more tokens per recipient (unsubscribe, open pixel, click
links). ``URLSafeSerializer`` builds a signer and derives its key (a SHA-1 of salt
and secret) for every token; here the keyed HMAC is kept and copied. The output is
the same string, byte for byte (compact JSON, zlib-compressed when that is shorter,
URL-safe base64 without padding, ``.``, the HMAC-SHA1 signature), so tokens are
read with ``URLSafeSerializer(secret, salt=salt).loads`` as before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib
from functools import lru_cache
from typing import Any


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@lru_cache(maxsize=64)
def _keyed(secret: str | bytes, salt: str) -> hmac.HMAC:
    """HMAC-SHA1 keyed as itsdangerous's default signer (``django-concat`` derivation)."""
    key_bytes = secret.encode() if isinstance(secret, str) else secret
    key = hashlib.sha1(salt.encode() + b"signer" + key_bytes).digest()
    return hmac.new(key, digestmod=hashlib.sha1)


def dumps(secret: str | bytes, salt: str, obj: Any) -> str:
    """``URLSafeSerializer(secret, salt=salt).dumps(obj)``, without its per-call setup."""
    payload = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    compressed = zlib.compress(payload)
    if len(compressed) < len(payload) - 1:
        payload = b"." + _b64(compressed)
    else:
        payload = _b64(payload)
    mac = _keyed(secret, salt).copy()
    mac.update(payload)
    return (payload + b"." + _b64(mac.digest())).decode("ascii")
