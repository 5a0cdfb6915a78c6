"""Opaque cursor pagination for the Metronome emulator, including legal empty pages.

A cursor is base64url JSON naming the listing, the offset, the page index and whether the empty
page for that position was already served. Clients must treat it as opaque; a garbled or foreign
cursor is a 400, as a real API would answer.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import TypeVar

from metronome_suger.sandbox.faults import Faults

T = TypeVar("T")


class CursorError(ValueError):
    """The `next_page` value is not a cursor this listing issued."""


def encode_cursor(kind: str, offset: int, page: int, empty_served: bool) -> str:
    raw = json.dumps(
        {"k": kind, "o": offset, "p": page, "e": int(empty_served)}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> tuple[int, int, bool]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        state = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        offset, page, empty = state["o"], state["p"], state["e"]
        valid = state["k"] == kind and all(
            isinstance(v, int) and v >= 0 for v in (offset, page, empty)
        )
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        valid = False
    if not valid:
        raise CursorError(f"invalid next_page cursor: {cursor!r}")
    return offset, page, bool(empty)


def paginate(
    items: Sequence[T], *, kind: str, limit: int, cursor: str | None, faults: Faults | None
) -> tuple[Sequence[T], str | None]:
    """One page of `items` and the next cursor (None on the last page).

    Empty pages: with `faults.empty_second_page` the second page position of a multi-page listing is
    first answered with no data and a cursor; with `faults.empty_pages` every data page is.
    """
    offset, page, empty_served = decode_cursor(kind, cursor) if cursor else (0, 0, False)
    if offset > len(items):
        raise CursorError(f"invalid next_page cursor: {cursor!r}")
    wants_empty = faults is not None and (
        faults.empty_pages or (faults.empty_second_page and page == 1)
    )
    if wants_empty and not empty_served and offset < len(items):
        return [], encode_cursor(kind, offset, page, True)
    end = offset + limit
    next_cursor = encode_cursor(kind, end, page + 1, False) if end < len(items) else None
    return items[offset:end], next_cursor
