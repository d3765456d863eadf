"""The fallback store: what is kept, for whom, for how long, and within which bounds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.cache import CachedResponse, FallbackStore, RequestKey
from sidecar.config import CachePolicy
from tests.fakes import FakeClock

SECRET = b"process-secret-0123456789abcdef"
URL = b"http://payments:8080/v1/x?y=1"
TOKEN_A = b"Bearer token-a-7f3c"
TOKEN_B = b"Bearer token-b-91d2"
Headers = Sequence[tuple[bytes, bytes]]


def make_store(clock: FakeClock, **overrides: Any) -> FallbackStore:
    settings: dict[str, Any] = {
        "max_stale": "60s",
        "max_bytes": "10KiB",
        "max_body": "1KiB",
        "max_entries": 100,
        "key_headers": ["accept"],
    }
    settings.update(overrides)
    return FallbackStore(CachePolicy(**settings), clock, SECRET)


def key_for(store: FallbackStore, url: bytes, request: Headers, method: bytes) -> RequestKey:
    key = store.request_key(method, url, request)
    assert key is not None
    return key


def put(
    store: FallbackStore,
    body: bytes = b"hello",
    *,
    url: bytes = URL,
    request: Headers = (),
    response: Headers = (),
    status: int = 200,
    method: bytes = b"GET",
) -> bool:
    """Record a complete answer as the fallback stage would; True when it was stored."""
    key = key_for(store, url, request, method)
    recorder = store.begin(key, request, status, response, len(body))
    if recorder is None:
        return False
    for start in range(0, len(body), 64):
        recorder.add(body[start : start + 64])
    return recorder.finish()


def get(
    store: FallbackStore, *, url: bytes = URL, request: Headers = (), method: bytes = b"GET"
) -> CachedResponse | None:
    return store.lookup(key_for(store, url, request, method), request)


def body_of(store: FallbackStore, **lookup: Any) -> bytes | None:
    """The body a lookup serves, or None on a miss."""
    cached = get(store, **lookup)
    return None if cached is None else cached.body


def test_store_serves_a_stored_answer(clock: FakeClock) -> None:
    """A stored answer comes back with its status, end-to-end headers, body and age."""
    store = make_store(clock)
    response = [(b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked")]
    assert put(store, b"x" * 200, status=203, response=response)
    clock.advance(2.5)
    cached = get(store)
    assert cached is not None
    assert (cached.status, cached.headers, cached.body) == (
        203,
        [(b"content-type", b"text/plain")],
        b"x" * 200,
    )
    assert cached.age == 2.5
    assert (store.hits, store.misses) == (1, 0)


def test_store_lookup_shares_the_body(clock: FakeClock) -> None:
    """Lookups hand out the stored body object itself, not a copy; headers are a fresh list."""
    store = make_store(clock)
    put(store, b"y" * 300)
    first, second = get(store), get(store)
    assert first is not None
    assert second is not None
    assert first.body is second.body
    first.headers.append((b"x-mutated", b"1"))
    assert second.headers == []


def test_store_misses_are_counted(clock: FakeClock) -> None:
    """A lookup with nothing stored is a miss."""
    store = make_store(clock)
    assert get(store) is None
    assert (store.hits, store.misses) == (0, 1)


def test_store_partitions_by_key_headers(clock: FakeClock) -> None:
    """Answers for different key header values, or an absent vs empty one, are kept apart."""
    store = make_store(clock)
    variants: list[Headers] = [[(b"accept", b"application/json")], [(b"accept", b"")], []]
    for index, request in enumerate(variants):
        assert put(store, b"body-%d" % index, request=request)
    assert store.entries == 3
    for index, request in enumerate(variants):
        assert body_of(store, request=request) == b"body-%d" % index
    assert get(store, request=[(b"accept", b"text/html")]) is None


def test_store_keys_by_method_and_url(clock: FakeClock) -> None:
    """GET and HEAD, and URLs differing only in the query, have separate entries."""
    store = make_store(clock)
    put(store, b"get")
    assert get(store, method=b"HEAD") is None
    assert get(store, url=URL.replace(b"y=1", b"y=2")) is None


def test_store_refuses_unkeyed_credentials(clock: FakeClock) -> None:
    """With Authorization/Cookie not keyed, such a request gets no key: not stored, not served."""
    store = make_store(clock)
    put(store, b"public")
    for header in ((b"authorization", TOKEN_A), (b"cookie", b"sid=1")):
        assert store.request_key(b"GET", URL, [header]) is None


def test_store_partitions_keyed_credentials_by_hmac(clock: FakeClock) -> None:
    """Bearer A and Bearer B get their own entries, an anonymous request neither, no raw token kept."""
    store = make_store(clock, key_headers=["accept", "authorization"])
    assert put(store, b"for-a", request=[(b"authorization", TOKEN_A)])
    assert put(store, b"for-b", request=[(b"authorization", TOKEN_B)])
    assert store.entries == 2
    for token, body in ((TOKEN_A, b"for-a"), (TOKEN_B, b"for-b")):
        request = [(b"authorization", token)]
        assert body_of(store, request=request) == body
        key = key_for(store, URL, request, b"GET")
        assert token not in bytes(key)
        assert token.decode() not in repr(key)
        assert token.split()[1] not in bytes(key)
    assert get(store) is None
    assert TOKEN_A.decode() not in repr(store)


def test_store_vary_partitions_by_request_values(clock: FakeClock) -> None:
    """A response's Vary names select among entries by the request's values of those headers."""
    store = make_store(clock)
    vary = [(b"vary", b"Accept-Language")]
    assert put(store, b"deutsch", request=[(b"accept-language", b"de")], response=vary)
    assert put(store, b"english", request=[(b"accept-language", b"en")], response=vary)
    assert store.entries == 2
    assert body_of(store, request=[(b"accept-language", b"de")]) == b"deutsch"
    assert get(store, request=[(b"accept-language", b"fr")]) is None
    assert get(store) is None


def test_store_vary_change_drops_entries_of_the_old_scheme(clock: FakeClock) -> None:
    """When the latest answer varies on other headers, entries chosen by the old ones go."""
    store = make_store(clock)
    put(store, b"old", request=[(b"x-a", b"1")], response=[(b"vary", b"x-a")])
    put(store, b"new", request=[(b"x-b", b"1")], response=[(b"vary", b"x-b")])
    assert store.entries == 1
    assert get(store, request=[(b"x-a", b"1")]) is None
    assert body_of(store, request=[(b"x-b", b"1")]) == b"new"


def test_store_vary_on_a_secret_keeps_only_its_hmac(clock: FakeClock) -> None:
    """A Vary on a keyed credential partitions too, without the raw token in the store."""
    store = make_store(clock, key_headers=["authorization"])
    request = [(b"authorization", TOKEN_A)]
    assert put(store, b"mine", request=request, response=[(b"vary", b"Authorization")])
    assert get(store, request=request) is not None
    assert get(store, request=[(b"authorization", TOKEN_B)]) is None


@pytest.mark.parametrize(
    ("status", "response", "content_length"),
    [
        (200, [(b"cache-control", b"no-store")], 5),
        (200, [(b"cache-control", b"Private")], 5),
        (200, [(b"cache-control", b'private="x-user"')], 5),
        (200, [(b"set-cookie", b"sid=1")], 5),
        (200, [(b"cache-control", b"must-revalidate")], 5),
        (200, [(b"cache-control", b"proxy-revalidate")], 5),
        (200, [(b"vary", b"*")], 5),
        (404, [], 5),
        (302, [], 5),
        (500, [], 5),
        (206, [], 5),
        (200, [], 1025),
    ],
    ids=[
        "no-store",
        "private",
        "private-with-argument",
        "set-cookie",
        "must-revalidate",
        "proxy-revalidate",
        "vary-star",
        "404",
        "302",
        "500",
        "206",
        "content-length-over-max-body",
    ],
)
def test_store_begin_refuses_unstorable(clock: FakeClock, status, response, content_length) -> None:
    """`begin()` returns None for every answer the storage rules forbid."""
    store = make_store(clock)
    key = key_for(store, URL, (), b"GET")
    assert store.begin(key, (), status, response, content_length) is None
    assert store.entries == 0


def test_recorder_gives_up_past_max_body(clock: FakeClock) -> None:
    """A body of unknown length that streams past max_body is dropped and never stored."""
    store = make_store(clock)
    recorder = store.begin(key_for(store, URL, (), b"GET"), (), 200, (), None)
    assert recorder is not None
    assert recorder.add(b"a" * 1024)
    assert not recorder.add(b"b")
    assert not recorder.add(b"c")
    assert not recorder.finish()
    assert (store.entries, store.bytes) == (0, 0)


def test_recorder_abandon_never_stores(clock: FakeClock) -> None:
    """An abandoned recording stores nothing, even if finish() is called afterwards."""
    store = make_store(clock)
    recorder = store.begin(key_for(store, URL, (), b"GET"), (), 200, (), 10)
    assert recorder is not None
    recorder.add(b"12345")
    recorder.abandon()
    assert not recorder.finish()
    assert not recorder.add(b"67890")
    assert store.entries == 0


def test_recorder_short_body_is_not_stored(clock: FakeClock) -> None:
    """A body shorter than its announced Content-Length is incomplete and not stored."""
    store = make_store(clock)
    recorder = store.begin(key_for(store, URL, (), b"GET"), (), 200, (), 10)
    assert recorder is not None
    recorder.add(b"12345")
    assert not recorder.finish()
    assert store.entries == 0


def test_recorder_finish_counts_once(clock: FakeClock) -> None:
    """A second finish() or a late abandon() leaves the stored entry alone."""
    store = make_store(clock)
    recorder = store.begin(key_for(store, URL, (), b"GET"), (), 200, (), 3)
    assert recorder is not None
    recorder.add(b"abc")
    assert recorder.finish()
    assert not recorder.finish()
    recorder.abandon()
    assert store.entries == 1


def test_store_head_answer_ignores_announced_length(clock: FakeClock) -> None:
    """A HEAD answer announces a body it does not carry, and is still stored."""
    store = make_store(clock)
    recorder = store.begin(key_for(store, URL, (), b"HEAD"), (), 200, (), 5000)
    assert recorder is not None
    assert recorder.finish()
    assert get(store, method=b"HEAD") is not None


def test_store_serves_up_to_max_stale(clock: FakeClock) -> None:
    """An entry is served while its age is at most max_stale, then dropped."""
    store = make_store(clock, max_stale="60s")
    put(store)
    clock.advance(60)
    assert get(store) is not None
    clock.advance(0.001)
    assert get(store) is None
    assert (store.entries, store.bytes) == (0, 0)


@pytest.mark.parametrize(
    ("stale_if_error", "served_at", "gone_at"),
    [(600, 599.0, 601.0), (10, 10.0, 11.0)],
    ids=["longer-than-max-stale", "shorter-than-max-stale"],
)
def test_store_stale_if_error_replaces_max_stale(
    clock: FakeClock, stale_if_error: int, served_at: float, gone_at: float
) -> None:
    """A response's own `stale-if-error=N` is its stale limit, longer or shorter than max_stale."""
    store = make_store(clock, max_stale="60s")
    control = [(b"cache-control", b"max-age=5, stale-if-error=%d" % stale_if_error)]
    put(store, response=control)
    clock.advance(served_at)
    assert get(store) is not None
    clock.advance(gone_at - served_at)
    assert get(store) is None


@pytest.mark.parametrize(
    ("upstream_age", "elapsed", "expected"),
    [
        (None, 0.0, b"0"),
        (None, 7.9, b"7"),
        (b"30", 0.0, b"30"),
        (b"30", 12.4, b"42"),
    ],
    ids=["fresh", "whole-seconds", "upstream-age", "upstream-age-plus-time"],
)
def test_cached_age_header_adds_upstream_age(
    clock: FakeClock, upstream_age, elapsed, expected
) -> None:
    """The served Age is the upstream's Age plus whole seconds since it was stored."""
    store = make_store(clock)
    response = [(b"age", upstream_age)] if upstream_age is not None else []
    put(store, response=response)
    clock.advance(elapsed)
    cached = get(store)
    assert cached is not None
    assert cached.age == pytest.approx(elapsed)
    assert cached.age_header() == expected
    assert all(name != b"age" for name, _ in cached.headers)


def test_cached_age_header_ignores_float_noise() -> None:
    """An age a hair under a whole second from float arithmetic still counts as that second."""
    assert CachedResponse(200, [], b"", 7.999999999999977, 0).age_header() == b"8"


def test_store_lru_by_bytes_keeps_the_most_recent(clock: FakeClock) -> None:
    """Filling far past max_bytes never exceeds it and keeps the most recently stored entries."""
    store = make_store(clock, max_bytes="1KiB", max_body="200B")
    urls = [b"http://payments:8080/item/%d" % index for index in range(50)]
    for url in urls:
        assert put(store, b"z" * 100, url=url)
        assert store.bytes <= 1024
    assert store.entries == 10
    assert store.bytes == 1000
    assert [get(store, url=url) is not None for url in urls[-10:]] == [True] * 10
    assert all(get(store, url=url) is None for url in urls[:-10])
    assert store.evictions == 40


def test_store_lookup_makes_an_entry_most_recent(clock: FakeClock) -> None:
    """A hit protects an entry from the next eviction; the least recently used one goes."""
    store = make_store(clock, max_bytes="1KiB", max_body="200B")
    urls = [b"http://payments:8080/item/%d" % index for index in range(11)]
    for url in urls[:10]:
        put(store, b"z" * 100, url=url)
    assert get(store, url=urls[0]) is not None
    put(store, b"z" * 100, url=urls[10])
    assert get(store, url=urls[0]) is not None
    assert get(store, url=urls[1]) is None


def test_store_max_entries_evicts_least_recent(clock: FakeClock) -> None:
    """Past max_entries the least recently used entry is evicted."""
    store = make_store(clock, max_entries=3)
    for index in range(5):
        put(store, url=b"http://h/%d" % index)
        assert store.entries <= 3
    assert [get(store, url=b"http://h/%d" % index) is not None for index in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_store_refuses_entry_larger_than_max_bytes(clock: FakeClock) -> None:
    """An entry whose body plus headers exceed max_bytes is never stored and evicts nothing."""
    store = make_store(clock, max_bytes="1KiB", max_body="1KiB")
    put(store, b"small", url=b"http://h/small")
    big_header = [(b"x-padding", b"p" * 100)]
    assert not put(store, b"b" * 1000, response=big_header)
    assert store.entries == 1
    assert get(store, url=b"http://h/small") is not None


def test_store_replacing_an_entry_updates_bytes(clock: FakeClock) -> None:
    """A newer answer for the same key replaces the old one and its byte count."""
    store = make_store(clock)
    put(store, b"a" * 500)
    assert store.bytes == 500
    clock.advance(1)
    put(store, b"b" * 20, response=[(b"etag", b"v2")])
    assert (store.entries, store.bytes) == (1, 20 + len(b"etag") + len(b"v2") + 4)
    assert body_of(store) == b"b" * 20


def test_store_keeps_the_fresher_of_two_racing_answers(clock: FakeClock) -> None:
    """An answer that began earlier but finished later does not replace a fresher one."""
    store = make_store(clock)
    key = key_for(store, URL, (), b"GET")
    slow = store.begin(key, (), 200, (), 4)
    clock.advance(1)
    fast = store.begin(key, (), 200, (), 4)
    assert slow is not None
    assert fast is not None
    fast.add(b"fast")
    assert fast.finish()
    slow.add(b"slow")
    assert not slow.finish()
    assert body_of(store) == b"fast"


def test_store_clear_empties_it(clock: FakeClock) -> None:
    """`clear()` drops every entry and its bytes."""
    store = make_store(clock)
    put(store, url=b"http://h/1")
    put(store, url=b"http://h/2", response=[(b"vary", b"accept-language")])
    store.clear()
    assert (store.entries, store.bytes) == (0, 0)
    assert get(store, url=b"http://h/1") is None


def test_store_repr_shows_live_state(clock: FakeClock) -> None:
    """The repr shows entries, bytes and counters against their bounds."""
    store = make_store(clock, max_entries=5, max_bytes="1KiB", max_body="1KiB")
    put(store, b"12345")
    get(store)
    assert repr(store) == (
        "FallbackStore(entries=1/5, bytes=5/1024, hits=1, misses=0, evictions=0)"
    )


_stores = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=20),  # which URL
        st.integers(min_value=0, max_value=600),  # body size
        st.integers(min_value=0, max_value=300),  # extra header bytes
        st.sampled_from([None, b"de", b"en"]),  # Accept-Language, varied on by some answers
        st.booleans(),  # look the URL up afterwards
    ),
    max_size=60,
)


@given(operations=_stores, max_entries=st.integers(min_value=1, max_value=8))
def test_store_bounds_always_hold(operations, max_entries: int) -> None:
    """After any sequence of stores and lookups, bytes ≤ max_bytes and entries ≤ max_entries."""
    clock = FakeClock()
    store = make_store(clock, max_bytes="2KiB", max_body="1KiB", max_entries=max_entries)
    for which, body_size, padding, language, look in operations:
        request = [] if language is None else [(b"accept-language", language)]
        response = [(b"x-padding", b"p" * padding)]
        if which % 2:
            response.append((b"vary", b"accept-language"))
        put(store, b"b" * body_size, url=b"http://h/%d" % which, request=request, response=response)
        if look:
            get(store, url=b"http://h/%d" % which, request=request)
        clock.advance(1)
        assert store.bytes <= 2048
        assert store.entries <= max_entries
        assert (store.entries == 0) == (store.bytes == 0)
