"""API-trigger tokens: made with :mod:`secrets`, stored as a hash, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from mage_nb_sched.core.errors import ValidationError

#: Tokens shorter than this are refused; they would be guessable.
MIN_TOKEN_LENGTH = 16
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_\-.~]+$")


def generate_token() -> str:
    """A new URL-safe random token (256 bits)."""
    return secrets.token_urlsafe(32)


def validate_token(token: object, field: str = "token") -> str:
    """Check a caller-chosen token: URL-safe characters, at least 16 long."""
    if not isinstance(token, str) or not _TOKEN_CHARS.match(token):
        raise ValidationError(
            field,
            "<redacted>",
            "a token must be a string of URL-safe characters (letters, digits, - _ . ~)",
            "Leave it out to get a random one, or use e.g. secrets.token_urlsafe(32).",
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValidationError(
            field,
            "<redacted>",
            f"a token must be at least {MIN_TOKEN_LENGTH} characters long",
            "Leave it out to get a random one, or use e.g. secrets.token_urlsafe(32).",
        )
    return token


def hash_token(token: str) -> str:
    """SHA-256 hex digest. Tokens are long random strings, so no salt/stretching is needed for
    lookup-by-hash; the clear token is never stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def verify_token(token: str | None, token_hash: str | None) -> bool:
    """Constant-time check of ``token`` against a stored hash."""
    if not token or not token_hash:
        return False
    return hmac.compare_digest(hash_token(token), token_hash)


def token_hint(token: str) -> str:
    """The last four characters, to tell tokens apart in listings without revealing them."""
    return f"…{token[-4:]}"
