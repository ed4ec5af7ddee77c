"""What counts as a URL, and how one is shown: never with a signed query string.

A presigned URL (S3's ``X-Amz-Signature``, GCS's ``X-Goog-Signature``, an Azure SAS ``sig``) is
a credential: anyone holding it can read the object until it expires. Messages, the state and
the results name such an object by :func:`redact`, which keeps the scheme, host and path.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["REMOTE_SCHEMES", "is_url", "redact", "scheme", "scrub"]

REMOTE_SCHEMES: frozenset[str] = frozenset({"s3", "gs", "gcs", "az", "abfs", "abfss", "http", "https"})
"""Schemes read through fsspec (``s3fs``, ``gcsfs``, ``adlfs``, or fsspec's own HTTP)."""


def scheme(text: str) -> str:
    """``"s3://b/k"`` -> ``"s3"``; ``""`` for a local path (``C:\\x`` included)."""
    head, sep, _ = text.partition("://")
    return head.lower() if sep and head.isalnum() and len(head) > 1 else ""


def is_url(text: object) -> bool:
    """Whether ``text`` names an object read through fsspec rather than a local path.

    >>> is_url("s3://bucket/clips/a.mp4"), is_url("clips/a.mp4"), is_url("file:///tmp/a.mp4")
    (True, False, False)
    """
    return isinstance(text, str) and scheme(text) in REMOTE_SCHEMES


_SECRET_PARAMS = frozenset({
    "sig", "signature", "se", "st", "sp", "sv", "sr", "spr", "srt", "ss", "skoid", "sktid", "skt",
    "ske", "sks", "skv", "expires", "key-pair-id", "policy", "token", "access_token", "credential",
    "googleaccessid", "x-amz-security-token",
})
"""Query parameters of presigned URLs and SAS tokens (S3, CloudFront, GCS, Azure) and bearer
tokens; with every ``x-amz-*`` and ``x-goog-*`` parameter, their values are never shown."""


def redact(text: str) -> str:
    """``text`` with the values of signing parameters and any user info replaced, as output
    and state name it; other query parameters (which may say which object it is) are kept.

    >>> redact("https://h/v.mp4?X-Amz-Signature=abc&X-Amz-Credential=k")
    'https://h/v.mp4?X-Amz-Signature=redacted&X-Amz-Credential=redacted'
    >>> redact("https://h/get?id=7&sig=abc"), redact("s3://bucket/a.mp4")
    ('https://h/get?id=7&sig=redacted', 's3://bucket/a.mp4')
    """
    if not is_url(text):
        return text
    parts = urlsplit(text)
    netloc = parts.netloc.rpartition("@")[2]
    pairs = []
    for item in parts.query.split("&") if parts.query else []:
        name, eq, _value = item.partition("=")
        low = unquote(name).lower()
        if eq and (low in _SECRET_PARAMS or low.startswith(("x-amz-", "x-goog-"))):
            item = f"{name}=redacted"
        pairs.append(item)
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(pairs), parts.fragment))


def scrub(text: str, url: str) -> str:
    """``text`` (a library's error message) with ``url`` redacted and every signing value of
    ``url`` blanked, however the library spelled the URL.

    >>> scrub("403 for URL('https://h/v?sig=s%2Fx')", "https://h/v?sig=s%2Fx")
    "403 for URL('https://h/v?sig=redacted')"
    """
    text = text.replace(url, redact(url))
    for item in urlsplit(url).query.split("&"):
        name, eq, value = item.partition("=")
        low = unquote(name).lower()
        if eq and value and (low in _SECRET_PARAMS or low.startswith(("x-amz-", "x-goog-"))):
            for form in {value, unquote(value)}:
                text = text.replace(form, "redacted")
    return text
