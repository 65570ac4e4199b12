"""Config helpers shared by the jobs: secrets never reach a written config."""

from __future__ import annotations

SECRET_WORDS = {"secret", "password", "token", "credential", "credentials"}  # whole words of a key


def redact(value, key: str = ""):
    """Replace values whose key names a secret (AWS keys, tokens, passwords) by '***'."""
    if isinstance(value, dict):
        return {name: redact(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [redact(item, key) for item in value]
    # by whole words: aws_secret_access_key, session_token are secrets; data.text.max_tokens is not
    if value is not None and SECRET_WORDS & set(key.lower().split("_")):
        return "***"
    return value
