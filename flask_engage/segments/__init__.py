"""Segments: filter schema, SQL compiler, membership and history."""
