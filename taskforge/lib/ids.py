"""Time-ordered identifiers.

Job ids are UUIDv7 (RFC 9562): the first 48 bits are a millisecond timestamp, so new rows
land at the right edge of the primary-key index instead of at random pages.
"""

from __future__ import annotations

import uuid

import uuid_utils


def uuid7() -> uuid.UUID:
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def is_uuid(value: str) -> bool:
    """True when ``value`` parses as a UUID (in any of the forms uuid.UUID accepts)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
