"""The one place where filesystem and driver errors become prefect-tune errors."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from prefect_tune.exceptions import (
    PrefectTuneError,
    StorageCredentialsError,
    StorageDriverMissingError,
    StorageError,
    StorageNotFoundError,
    StoragePermissionError,
    UnknownStorageSchemeError,
)

# protocol -> (package that implements it, extra that installs it)
_DRIVERS: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", ""),
    "abfs": ("adlfs", ""),
    "abfss": ("adlfs", ""),
}

# How drivers say "these credentials are wrong": exception types, service error codes (botocore
# keeps them in ``response["Error"]["Code"]``; s3fs re-raises a PermissionError with only the
# human message, chaining the original), and message phrases for drivers that keep neither.
_CREDENTIAL_TYPES = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "RefreshError", "DefaultCredentialsError"}
)
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
        "InvalidClientTokenId",
        "TokenRefreshRequired",
        "UnrecognizedClientException",
        "AuthFailure",
        "invalid_grant",
    }
)
_CREDENTIAL_CODE_WORDS = re.compile(r"\b(?:" + "|".join(sorted(_CREDENTIAL_CODES)) + r")\b")
_CREDENTIAL_PHRASES = (
    "Unable to locate credentials",
    "Anonymous caller",
    "does not exist in our records",
    "signature we calculated does not match",
    "Invalid Credentials",
)

# Secrets may appear in a driver's message (a URL with a token, a signed header). Redact anything
# that looks like key=value for a secret-ish key before it reaches a user or a log.
_SECRET_PATTERN = re.compile(
    r"(?i)((?:secret|token|password|key|credential|signature)[a-z_]*[\"']?\s*[:=]\s*[\"']?)([^\s\"',&}]+)"
)


# The user info of a URL (``scheme://user:password@host``), up to its first "@": a secret may
# hold "/" and ":" as an AWS secret key does.
_URL_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s@]*:[^\s@]*@")


def redact(message: str) -> str:
    """Masks values of secret-looking ``key=value`` pairs and the ``user:password@`` of URLs in
    ``message``."""
    return _SECRET_PATTERN.sub(r"\1***", _URL_USERINFO.sub(r"\1***@", message))


def public_url(url: str) -> str:
    """``url`` as it may be shown (UI, events, logs): without its user info and with the values
    of secret-looking query pairs masked.

    Examples:
        >>> public_url("s3://AKIA:se/cret@bucket/tune?token=abc")
        's3://bucket/tune?token=***'
        >>> public_url("/data/tune")
        '/data/tune'
    """
    head, sep, rest = url.partition("://")
    if sep and "@" in rest.split("?", 1)[0]:
        rest = rest.split("@", 1)[1] if ":" in rest.split("@", 1)[0] else rest
    return redact(f"{head}{sep}{rest}")


def has_password(url: str) -> bool:
    """Whether ``url`` carries a ``user:password@`` part."""
    return _URL_USERINFO.match(url.strip()) is not None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors it chains, followed as a traceback shows them."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )


def _rejects_credentials(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it chains, says the credentials are wrong or missing."""
    for err in _causes(exc):
        if type(err).__name__ in _CREDENTIAL_TYPES:
            return True
        response = getattr(err, "response", None)
        code = (response.get("Error") or {}).get("Code") if isinstance(response, dict) else None
        if code in _CREDENTIAL_CODES:
            return True
        if any(getattr(err, attr, None) == 401 for attr in ("code", "status")):
            return True
        # Codes as whole words, and no bare "401": a path such as checkpoint_004010 is no error.
        message = str(err)
        if _CREDENTIAL_CODE_WORDS.search(message) or any(p in message for p in _CREDENTIAL_PHRASES):
            return True
    return False


def driver_missing(protocol: str, cause: BaseException) -> StorageDriverMissingError:
    """Builds the error for a protocol whose fsspec driver package is not installed."""
    package, extra = _DRIVERS.get(protocol, (None, ""))
    if package is None:
        hint = str(cause)
    elif extra:
        hint = f"Install {package} to use {protocol}:// paths: pip install 'prefect-tune[{extra}]'"
    else:
        hint = f"Install {package} to use {protocol}:// paths: pip install {package}"
    return StorageDriverMissingError(hint)


def unknown_scheme(protocol: str) -> UnknownStorageSchemeError:
    return UnknownStorageSchemeError(
        f"Unknown storage scheme {protocol!r}: storage_path must be a local or NFS path, "
        "or an fsspec URL such as s3://bucket/path, gs://bucket/path or memory://path."
    )


def translate(exc: BaseException, url: str) -> StorageError:
    """Maps a backend exception raised while touching ``url`` to a :class:`StorageError`.

    Args:
        exc: The exception raised by fsspec or the driver underneath it.
        url: The URL being accessed, named in the message.

    Returns:
        The error to raise, with ``exc`` meant as its ``__cause__``.
    """
    if isinstance(exc, StorageError):
        return exc
    text = redact(f"{type(exc).__name__}: {exc}")
    if _rejects_credentials(exc):
        return StorageCredentialsError(
            f"The storage rejected the credentials for {url} ({text}). Check the credentials "
            "in the TuneStorage block or storage_options."
        )
    if isinstance(exc, PermissionError):
        return StoragePermissionError(
            f"Access denied to {url} ({text}). Check that the credentials in the TuneStorage "
            "block or storage_options are right and may access this path."
        )
    if isinstance(exc, FileNotFoundError):
        return StorageNotFoundError(f"Not found: {url} ({text}).")
    return StorageError(f"Storage operation on {url} failed: {text}")


_DRIVER_ROOT_MODULES = frozenset({"botocore", "aiobotocore", "google", "gcsfs", "s3fs"})


@contextlib.contextmanager
def translated(url: str) -> Iterator[None]:
    """Re-raises any backend error inside the block as the matching :class:`StorageError`."""
    try:
        yield
    except PrefectTuneError:  # ours already (an UnsafePathError is a ValueError too)
        raise
    except (OSError, ValueError, RuntimeError, TimeoutError) as exc:
        raise translate(exc, url) from exc
    except Exception as exc:  # botocore / google-auth errors have their own roots
        if type(exc).__module__.split(".")[0] in _DRIVER_ROOT_MODULES:
            raise translate(exc, url) from exc
        raise
