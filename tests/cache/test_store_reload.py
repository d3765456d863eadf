"""The fallback store under a policy changed by a reload: entries carried under the new rules."""

from __future__ import annotations

from typing import Any

from sidecar.cache import FallbackStore
from sidecar.config import CachePolicy
from tests.cache.test_store import SECRET, URL, Headers, body_of, make_store, put
from tests.fakes import FakeClock


def policy(**overrides: Any) -> CachePolicy:
    """The policy `make_store` uses, with `overrides`."""
    settings: dict[str, Any] = {
        "max_stale": "60s",
        "max_bytes": "10KiB",
        "max_body": "1KiB",
        "max_entries": 100,
        "key_headers": ["accept"],
    }
    settings.update(overrides)
    return CachePolicy(**settings)


def url(n: int) -> bytes:
    return URL + b"&n=%d" % n


def test_store_reconfigure_raised_max_stale_keeps_serving(clock: FakeClock) -> None:
    """An entry past the old max_stale but within the new one is still served."""
    store = make_store(clock, max_stale="60s")
    assert put(store, b"kept")
    clock.advance(50.0)
    store.reconfigure(policy(max_stale="10m"))
    clock.advance(30.0)  # 80 s old: beyond the old 60 s, within the new 10 m
    assert body_of(store) == b"kept"


def test_store_reconfigure_lowered_max_stale_drops_older_entries(clock: FakeClock) -> None:
    """Entries already older than the new max_stale are dropped; younger ones stay."""
    store = make_store(clock)
    assert put(store, b"old", url=url(1))
    clock.advance(40.0)
    assert put(store, b"young", url=url(2))
    clock.advance(5.0)
    store.reconfigure(policy(max_stale="30s"))
    assert store.entries == 1
    assert body_of(store, url=url(1)) is None
    assert body_of(store, url=url(2)) == b"young"
    clock.advance(26.0)  # 31 s old: past the new limit
    assert body_of(store, url=url(2)) is None


def test_store_reconfigure_keeps_an_entrys_own_stale_if_error(clock: FakeClock) -> None:
    """An entry's own `stale-if-error` stays its limit whatever max_stale becomes."""
    store = make_store(clock)
    assert put(store, b"own", response=[(b"cache-control", b"max-age=1, stale-if-error=300")])
    clock.advance(100.0)
    store.reconfigure(policy(max_stale="10s"))
    assert body_of(store) == b"own"


def test_store_reconfigure_evicts_least_recently_used_to_new_bounds(clock: FakeClock) -> None:
    """Lower max_entries and max_bytes evict the least recently used entries first."""
    store = make_store(clock)
    for n in range(5):
        assert put(store, b"x" * 100, url=url(n))
    assert body_of(store, url=url(0)) == b"x" * 100  # now the most recently used
    store.reconfigure(policy(max_entries=3))
    assert store.entries == 3
    assert [body_of(store, url=url(n)) is not None for n in range(5)] == [
        True, False, False, True, True,
    ]  # fmt: skip
    assert store.evictions == 2
    per_entry = store.bytes // 3
    store.reconfigure(policy(max_entries=3, max_bytes=f"{per_entry * 2}B", max_body="100B"))
    assert store.entries == 2


def test_store_reconfigure_drops_what_the_new_rules_would_not_store(clock: FakeClock) -> None:
    """A smaller max_body or a method no longer listed drops those entries."""
    store = make_store(clock, methods=["GET", "HEAD"])
    assert put(store, b"x" * 600, url=url(1))
    assert put(store, b"y" * 10, url=url(2))
    assert put(store, b"", url=url(3), method=b"HEAD")
    store.reconfigure(policy(methods=["GET"], max_body="500B"))
    assert store.entries == 1
    assert body_of(store, url=url(2)) == b"y" * 10


def test_store_reconfigure_new_key_headers_start_empty(clock: FakeClock) -> None:
    """Entries keyed by the old key_headers are dropped: the new keys cannot be derived."""
    store = make_store(clock)
    request: Headers = [(b"accept", b"application/json")]
    assert put(store, b"json", request=request)
    store.reconfigure(policy(key_headers=["accept", "x-tenant"]))
    assert store.entries == 0
    assert body_of(store, request=request) is None


def test_store_reconfigure_judges_a_recording_by_the_policy_it_ends_under(
    clock: FakeClock,
) -> None:
    """A body still streaming during the reload is stored under the new rules and limits."""
    store = make_store(clock, max_stale="60s")
    key = store.request_key(b"GET", URL, ())
    assert key is not None
    recorder = store.begin(key, (), 200, (), 5)
    assert recorder is not None
    recorder.add(b"hello")
    store.reconfigure(policy(max_stale="10m"))
    assert recorder.finish()
    clock.advance(120.0)
    assert body_of(store) == b"hello"
    small = FallbackStore(policy(), clock, SECRET)
    key = small.request_key(b"GET", URL, ())
    assert key is not None
    recorder = small.begin(key, (), 200, (), 800)
    assert recorder is not None
    recorder.add(b"z" * 800)
    small.reconfigure(policy(max_body="500B"))
    assert not recorder.finish()
    assert small.entries == 0
