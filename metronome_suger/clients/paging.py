"""The one page loop behind every list call of the Metronome and Suger clients.

Why it exists: three endpoints page three different ways (Metronome's ``next_page`` cursor, Suger's
plain-array ``limit``/``offset``, Suger's ``usageRecordGroups`` + ``nextOffset`` object), but the
loop around them — ask for a page, hand its items over, move on, and *stop with an error instead of
looping forever* when a server repeats itself or never ends — is the same, so it lives here once.

Each page shape is a small :class:`PageShape` strategy (defined next to its client) that says how
to ask for a position and reads one decoded payload into a :class:`Page`. No HTTP, no Dagster: the
caller passes the function that fetches a page and the one that builds its error.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["MAX_PAGES", "Page", "PageShape", "PageShapeError", "paginate"]

MAX_PAGES = 100_000
"""Page cap per list call: a server minting fresh positions forever is a bug; fail, don't hang."""

P = TypeVar("P", bound=Hashable)


class PageShapeError(Exception):
    """A page payload of the wrong shape; :func:`paginate` turns it into the caller's error."""


@dataclass(frozen=True)
class Page(Generic[P]):
    """One decoded page: its raw ``items``, where the ``next`` page starts (None: this was the last
    page) and, optionally, a ``fingerprint`` of its content so a server that ignores the position
    and serves the same page again is caught."""

    items: list[Any]
    next: P | None
    fingerprint: tuple[Any, ...] | None = None


class PageShape(Protocol[P]):
    """How one endpoint pages (a strategy for :func:`paginate`)."""

    @property
    def start(self) -> P:
        """The position of the first page."""

    @property
    def noun(self) -> str:
        """What a position is called in error messages (``cursor``, ``offset``)."""

    @property
    def items_at(self) -> str:
        """Where the items sit in the payload, for validation messages (``""``: the payload)."""

    def params(self, position: P) -> dict[str, Any]:
        """The query parameters that ask for the page at ``position``."""

    def read(self, payload: Any, position: P) -> Page[P]:
        """Split a decoded payload into items and the next position; :class:`PageShapeError` if
        the payload has the wrong shape."""


def _show(position: object) -> str:
    return repr(position[:40]) if isinstance(position, str) else repr(position)


def paginate(
    shape: PageShape[P],
    fetch: Callable[[dict[str, Any]], Any],
    fail: Callable[[str], Exception],
    *,
    max_pages: int = MAX_PAGES,
) -> Iterator[list[Any]]:
    """Yield each page's raw items, first page first, fetching lazily.

    ``fetch`` gets the page's query parameters and returns the decoded payload; ``fail`` builds the
    error raised for a malformed payload, a page served twice in a row, a position handed out twice,
    or more than ``max_pages`` pages. A page's items are yielded before its next position is
    checked.
    """
    position = shape.start
    seen: set[P] = {position}
    previous: tuple[Any, ...] | None = None
    for number in range(1, max_pages + 1):
        payload = fetch(shape.params(position))
        try:
            page = shape.read(payload, position)
        except PageShapeError as exc:
            raise fail(str(exc)) from None
        if page.fingerprint is not None and page.fingerprint == previous:
            raise fail(f"{shape.noun} {_show(position)} returned the previous page again")
        yield page.items
        if page.next is None:
            return
        if page.next in seen:
            raise fail(
                f"pagination {shape.noun} repeated on page {number} ({_show(page.next)}); "
                "stopping instead of looping forever"
            )
        seen.add(page.next)
        previous = page.fingerprint
        position = page.next
    raise fail(f"more than {max_pages} pages; stopping")
