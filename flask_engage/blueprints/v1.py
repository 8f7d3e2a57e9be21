"""Engage.so-compatible v1 user API (``/v1/users/...``)."""
