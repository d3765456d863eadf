"""Storage rules: which answers are kept, their stale limit, their Age and kept headers."""

from __future__ import annotations

import pytest

from sidecar.cache.rules import (
    Refusal,
    cache_directives,
    header_bytes,
    initial_age,
    refusal,
    stale_limit,
    stored_headers,
    vary_names,
)

MAX_BODY = 1000


def refused(
    headers: list[tuple[bytes, bytes]],
    status: int = 200,
    request: list[tuple[bytes, bytes]] | None = None,
    length: int | None = None,
) -> Refusal | None:
    return refusal(request or [], status, headers, length, MAX_BODY)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"cache-control", b"no-store")], Refusal.NO_STORE),
        ([(b"cache-control", b"max-age=60, No-Store")], Refusal.NO_STORE),
        ([(b"cache-control", b"private")], Refusal.PRIVATE),
        ([(b"cache-control", b"PRIVATE")], Refusal.PRIVATE),
        ([(b"cache-control", b'private="x-user, x-other", max-age=5')], Refusal.PRIVATE),
        ([(b"cache-control", b"public"), (b"cache-control", b"private")], Refusal.PRIVATE),
        ([(b"cache-control", b"must-revalidate")], Refusal.NO_STALE),
        ([(b"cache-control", b"max-age=0, Proxy-Revalidate")], Refusal.NO_STALE),
        ([(b"cache-control", b"no-cache")], Refusal.NO_STALE),
        ([(b"cache-control", b"public, s-maxage=60")], Refusal.NO_STALE),
        ([(b"set-cookie", b"session=abc; HttpOnly")], Refusal.SET_COOKIE),
        ([(b"vary", b"*")], Refusal.VARY_ALL),
        ([(b"vary", b"accept, *")], Refusal.VARY_ALL),
    ],
    ids=[
        "no-store",
        "no-store-any-case",
        "private",
        "private-upper",
        "private-with-quoted-list",
        "private-on-second-line",
        "must-revalidate",
        "proxy-revalidate",
        "no-cache",
        "s-maxage",
        "set-cookie",
        "vary-star",
        "vary-star-in-list",
    ],
)
def test_refusal_names_the_rule(headers, expected: Refusal) -> None:
    """Each non-storable response is refused with the rule it breaks."""
    assert refused(headers) is expected


@pytest.mark.parametrize(
    "status",
    [100, 206, 301, 304, 404, 429, 500, 503],
    ids=lambda status: str(status),
)
def test_refusal_stores_only_whole_2xx(status: int) -> None:
    """Only 2xx answers are stored (3xx and 404 not in this version), and never a partial 206."""
    assert refused([], status=status) is Refusal.STATUS


@pytest.mark.parametrize("status", [200, 201, 203, 204], ids=lambda status: str(status))
def test_refusal_accepts_plain_success(status: int) -> None:
    """A 2xx answer with no forbidding header may be stored."""
    assert (
        refused([(b"cache-control", b"public, max-age=60"), (b"vary", b"accept")], status) is None
    )


def test_refusal_honours_request_no_store() -> None:
    """A request with `Cache-Control: no-store` forbids storing its answer (RFC 9111 §5.2.1.5)."""
    assert refused([], request=[(b"cache-control", b"no-store")]) is Refusal.NO_STORE


@pytest.mark.parametrize(
    ("length", "expected"),
    [(None, None), (MAX_BODY, None), (MAX_BODY + 1, Refusal.TOO_LARGE)],
    ids=["unknown", "at-limit", "over-limit"],
)
def test_refusal_checks_announced_length(length: int | None, expected) -> None:
    """An announced body over max_body is refused at once; an unknown one is judged as it streams."""
    assert refused([], length=length) is expected


def test_directives_keep_quoted_commas_and_first_duplicate() -> None:
    """Quoted arguments may hold commas; of duplicate directives the first one counts."""
    headers = [
        (b"cache-control", b'no-cache="set-cookie, x-a", max-age=5'),
        (b"cache-control", b'MAX-AGE=9, stale-if-error="30"'),
    ]
    assert cache_directives(headers) == {
        b"no-cache": b"set-cookie, x-a",
        b"max-age": b"5",
        b"stale-if-error": b"30",
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], 300.0),
        ([(b"cache-control", b"max-age=60, stale-if-error=900")], 900.0),
        ([(b"cache-control", b"stale-if-error=10")], 10.0),
        ([(b"cache-control", b"stale-if-error=0")], 0.0),
        ([(b"cache-control", b'stale-if-error="45"')], 45.0),
        ([(b"cache-control", b"stale-if-error=-5")], 300.0),
        ([(b"cache-control", b"stale-if-error=soon")], 300.0),
        ([(b"cache-control", b"stale-if-error")], 300.0),
    ],
    ids=["default", "longer", "shorter", "zero", "quoted", "negative", "garbage", "no-value"],
)
def test_stale_limit_prefers_stale_if_error(headers, expected: float) -> None:
    """A valid `stale-if-error=N` replaces max_stale in either direction; an invalid one is ignored."""
    assert stale_limit(headers, 300.0) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], 0),
        ([(b"age", b"42")], 42),
        ([(b"age", b"7, 9")], 7),
        ([(b"age", b"3"), (b"age", b"8")], 3),
        ([(b"age", b"-1")], 0),
        ([(b"age", b"1.5")], 0),
        ([(b"age", b"99999999999")], 2**31),
    ],
    ids=["absent", "plain", "list-first", "repeated-first", "negative", "fraction", "huge"],
)
def test_initial_age_reads_upstream_age(headers, expected: int) -> None:
    """The upstream's Age is its first member; invalid values are ignored (RFC 9111 §5.1)."""
    assert initial_age(headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], ()),
        ([(b"vary", b"Accept-Language, accept")], (b"accept", b"accept-language")),
        ([(b"vary", b"x-b"), (b"vary", b" X-A ,x-b,")], (b"x-a", b"x-b")),
        ([(b"vary", b"*")], None),
    ],
    ids=["none", "lowercased-sorted", "several-lines", "star"],
)
def test_vary_names_normalise(headers, expected) -> None:
    """Vary names are lowercased, deduplicated and sorted; `*` gives None."""
    assert vary_names(headers) == expected


def test_stored_headers_drop_hop_by_hop_and_age() -> None:
    """An entry keeps end-to-end headers only, without Age (recomputed when served)."""
    headers = [
        (b"content-type", b"application/json"),
        (b"connection", b"x-trace"),
        (b"x-trace", b"hop"),
        (b"transfer-encoding", b"chunked"),
        (b"content-length", b"12"),
        (b"age", b"5"),
        (b"etag", b'"v1"'),
    ]
    assert stored_headers(headers) == ((b"content-type", b"application/json"), (b"etag", b'"v1"'))


def test_header_bytes_counts_wire_size() -> None:
    """Header bytes are counted as on the wire: `name: value` plus CRLF per line."""
    assert header_bytes([(b"ab", b"cde"), (b"f", b"")]) == (2 + 3 + 4) + (1 + 0 + 4)
