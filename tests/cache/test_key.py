"""Cache keys: method, URL and key headers partition entries; credentials only as an HMAC."""

from __future__ import annotations

import pytest

from sidecar.cache.key import KeyBuilder, RequestKey, field_value

SECRET = b"process-secret-0123456789abcdef"
URL = b"http://payments:8080/v1/x?y=1"
TOKEN_A = b"Bearer token-a-7f3c"
TOKEN_B = b"Bearer token-b-91d2"


def builder(key_headers: tuple[str, ...] = ("accept",), methods=("GET", "HEAD")) -> KeyBuilder:
    return KeyBuilder(methods, key_headers, SECRET)


def key_of(keys: KeyBuilder, *headers: tuple[bytes, bytes], method=b"GET", url=URL) -> RequestKey:
    key = keys.request_key(method, url, list(headers))
    assert key is not None
    return key


def test_key_holds_method_url_and_key_header_values() -> None:
    """The primary key is the method, the exact URL bytes and each key header's value."""
    key = key_of(builder(), (b"accept", b"application/json"), (b"x-other", b"ignored"))
    assert key == RequestKey(b"GET", URL, ((b"accept", b"application/json"),))
    assert bytes(key) == b"GET " + URL + b"\naccept: application/json"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((b"GET", URL, []), (b"HEAD", URL, [])),
        ((b"GET", URL, []), (b"GET", URL.replace(b"y=1", b"y=2"), [])),
        ((b"GET", URL, []), (b"GET", URL.replace(b"payments", b"ledger"), [])),
        ((b"GET", b"http://h/a%2Fb", []), (b"GET", b"http://h/a/b", [])),
        ((b"GET", URL, [(b"accept", b"a/b")]), (b"GET", URL, [(b"accept", b"a/c")])),
        ((b"GET", URL, []), (b"GET", URL, [(b"accept", b"")])),
    ],
    ids=["method", "query", "authority", "url-bytes-not-decoded", "key-header", "absent-vs-empty"],
)
def test_key_differs_when_any_part_differs(first, second) -> None:
    """Requests that differ in method, URL bytes or a key header's value get different keys."""
    keys = builder()
    assert keys.request_key(*first) != keys.request_key(*second)


def test_key_ignores_headers_that_are_not_keyed() -> None:
    """Headers outside key_headers (and Vary) do not partition entries."""
    keys = builder()
    assert key_of(keys, (b"user-agent", b"a")) == key_of(keys, (b"user-agent", b"b"))


def test_key_absent_header_is_not_empty_header() -> None:
    """An absent key header is recorded as None, an empty one as empty bytes."""
    keys = builder()
    assert key_of(keys).headers == ((b"accept", None),)
    assert key_of(keys, (b"accept", b"")).headers == ((b"accept", b""),)


def test_key_joins_repeated_header_lines() -> None:
    """A key header sent on several lines counts as its comma-joined value."""
    keys = builder()
    split = key_of(keys, (b"accept", b"a/b"), (b"accept", b"c/d"))
    assert split == key_of(keys, (b"accept", b"a/b, c/d"))


def test_key_refuses_methods_not_listed() -> None:
    """A method outside `methods` gets no key: neither stored nor served."""
    assert builder().request_key(b"POST", URL, []) is None
    assert builder(methods=("POST",)).request_key(b"POST", URL, []) is not None


@pytest.mark.parametrize(
    "header",
    [(b"authorization", TOKEN_A), (b"cookie", b"session=s3cr3t")],
    ids=["authorization", "cookie"],
)
def test_key_refuses_credentials_that_are_not_keyed(header) -> None:
    """A request carrying Authorization or Cookie gets no key unless that header is keyed."""
    assert builder().request_key(b"GET", URL, [header]) is None
    keyed = builder(key_headers=("accept", header[0].decode()))
    assert keyed.request_key(b"GET", URL, [header]) is not None


def test_key_other_secret_headers_are_not_refused() -> None:
    """Only Authorization and Cookie refuse a request; an unkeyed X-Api-Key does not."""
    assert builder().request_key(b"GET", URL, [(b"x-api-key", b"k")]) is not None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"authorization", TOKEN_A),
        (b"cookie", b"session=s3cr3t-cookie"),
        (b"proxy-authorization", b"Basic dXNlcjpwdw=="),
        (b"x-api-key", b"api-key-5e6f7a"),
    ],
    ids=["authorization", "cookie", "proxy-authorization", "x-api-key"],
)
def test_key_never_holds_a_raw_secret(name: bytes, value: bytes) -> None:
    """A keyed secret header appears in the key only as an HMAC, never as its raw bytes."""
    keys = builder(key_headers=(name.decode(),))
    key = key_of(keys, (name, value))
    ((_, sealed),) = key.headers
    assert sealed is not None
    assert sealed.startswith(b"hmac-sha256:")
    assert value not in bytes(key)
    assert value.decode() not in repr(key)
    assert SECRET not in bytes(key)
    assert value not in repr(keys).encode()


def test_key_partitions_by_credential() -> None:
    """Different bearer tokens get different keys; the same token always gets the same key."""
    keys = builder(key_headers=("authorization",))
    key_a = key_of(keys, (b"authorization", TOKEN_A))
    assert key_a != key_of(keys, (b"authorization", TOKEN_B))
    assert key_a == key_of(keys, (b"authorization", TOKEN_A))
    assert key_a != key_of(keys)


def test_key_hmac_depends_on_the_process_secret() -> None:
    """The same token keyed under two secrets gives unrelated tags (no offline lookup tables)."""
    other = KeyBuilder(("GET",), ("authorization",), b"another-secret-fedcba9876543210")
    header = (b"authorization", TOKEN_A)
    assert key_of(builder(key_headers=("authorization",)), header) != key_of(other, header)


def test_key_secret_must_not_be_short() -> None:
    """A secret shorter than 16 bytes is refused: an HMAC under it would not hide anything."""
    with pytest.raises(ValueError, match="at least 16"):
        KeyBuilder(("GET",), (), b"short")


def test_variant_seals_secret_vary_names() -> None:
    """A Vary secondary key carries request values, with secret headers sealed like the key."""
    keys = builder(key_headers=("authorization",))
    variant = keys.variant(
        (b"accept-language", b"authorization", b"x-missing"),
        [(b"accept-language", b"de"), (b"authorization", TOKEN_A)],
    )
    assert variant[0] == b"de"
    assert variant[1] is not None
    assert TOKEN_A not in variant[1]
    assert variant[2] is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        ([(b"accept", b"")], b""),
        ([(b"accept", b"a"), (b"x", b"y"), (b"accept", b"b")], b"a, b"),
    ],
    ids=["absent", "empty", "repeated"],
)
def test_field_value_reads_one_field(headers, expected) -> None:
    """`field_value` is None when absent, and joins repeated lines with a comma."""
    assert field_value(headers, b"accept") == expected
