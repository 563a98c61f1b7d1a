"""The failures a Celery task retries with backoff instead of recording them as final."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError

try:  # S3 storage through django-storages; absent when boto is not installed
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError
except ImportError:  # pragma: no cover
    BotoConnectionError = HTTPClientError = ConnectionError  # type: ignore[misc,assignment]

# Failures worth retrying with backoff: the database or the storage was briefly unreachable.
# Anything about one item itself (corrupt bytes, a missing file) is permanent, is recorded by
# the service and never reaches the task.
TRANSIENT_ERRORS = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
    BotoConnectionError,
    HTTPClientError,
)
