"""Credentials inside URLs, masked wherever a URL is shown: logs, errors, --print-config,
the manifests and the model card.

A URL carries credentials in its user-info (`https://user:password@host`) and in query
parameters that sign or authorise a request (presigned S3 URLs, tokens). Both are
replaced by a mask; the rest of the URL stays readable.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "**********"
# Query parameters that carry a credential (lower case; AWS's X-Amz-* presigning included).
SECRET_PARAMETERS = frozenset(
    {
        "x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature", "sig", "token",
        "access_token", "accesstoken", "id_token", "refresh_token", "api_key", "apikey", "key", "secret",
        "client_secret", "password", "pass", "pwd", "auth", "authorization", "credential", "credentials",
        "x-goog-signature", "x-goog-credential",
    }
)  # fmt: skip
# Anything that looks like a URL with a scheme, up to whitespace or a quote.
_URL = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'"<>`]+""")


def redact_url(value: str) -> str:
    """`value` with the credentials of the URL it is masked; anything else unchanged."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if not parts.scheme or not parts.netloc:
        return value
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name.lower() in SECRET_PARAMETERS for name, _ in pairs):
            query = urlencode([(n, MASK if n.lower() in SECRET_PARAMETERS else v) for n, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return value
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside `text` with its credentials masked."""
    if "://" not in text:
        return text
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


def redact_document(value: Any) -> Any:
    """A JSON-like document (a manifest) with the credentials of every URL in it masked."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_document(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_document(v) for v in value]
    return value


def url_secrets(value: str) -> list[str]:
    """The credentials inside a URL (the password of its user-info, the values of secret
    parameters), so that they are masked even where they appear outside the URL."""
    found: list[str] = []
    for match in _URL.finditer(value or ""):
        try:
            parts = urlsplit(match.group(0))
        except ValueError:
            continue
        if parts.password:
            found.append(parts.password)
        found += [v for n, v in parse_qsl(parts.query, keep_blank_values=True) if n.lower() in SECRET_PARAMETERS and v]
    return found
