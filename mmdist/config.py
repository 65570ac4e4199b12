"""Config helpers shared by the jobs: secrets never reach a written config."""

from __future__ import annotations

SECRET_MARKERS = ("secret", "password", "token", "access_key", "credential")


def redact(value, key: str = ""):
    """Replace values whose key names a secret (AWS keys, tokens, passwords) by '***'."""
    if isinstance(value, dict):
        return {name: redact(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [redact(item, key) for item in value]
    if value is not None and any(marker in key.lower() for marker in SECRET_MARKERS):
        return "***"
    return value
