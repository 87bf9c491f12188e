"""Timestamps as the API shows them: ISO 8601 in UTC with a `Z`, whole seconds."""

from datetime import UTC, datetime


def iso_utc(moment: datetime | None) -> str | None:
    """`2024-01-15T10:00:00Z`, or None for a time that has not happened yet.

    Sub-second digits are cut (not rounded), as in the seed's examples, so a shown time is never
    later than the stored one.
    """
    if moment is None:
        return None
    # isoformat writes a four-digit year (strftime's %Y writes year 5 as "5" on glibc).
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
