"""Tests for the config models: addresses, defaults, per-section rules and cross-section rules."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from sidecar.config import (
    AbortFault,
    BindAddress,
    BreakerPolicy,
    ConfigError,
    Endpoint,
    FailureKind,
    LoadBalancing,
    RouteConfig,
    RouteMatch,
    SidecarConfig,
    UnknownHosts,
    UpstreamConfig,
    config_json_schema,
    default_config,
    load_config_text,
)


def issues(text: str) -> list[str]:
    """The issues of an invalid config as `path: message` strings (positions dropped)."""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="c.yaml")
    return [f"{issue.path}: {issue.message}" for issue in info.value.issues]


def one_upstream(extra: str = "", name: str = "payments") -> str:
    """A minimal valid config with one upstream, plus `extra` lines inside the upstream."""
    return f"version: 1\nupstreams:\n  {name}:\n    endpoints: [http://payments:8080]\n{extra}"


@pytest.mark.parametrize(
    ("text", "host", "port", "loopback"),
    [
        ("127.0.0.1:15001", "127.0.0.1", 15001, True),
        ("127.8.9.1:80", "127.8.9.1", 80, True),
        ("[::1]:15001", "::1", 15001, True),
        ("localhost:0", "localhost", 0, True),
        ("0.0.0.0:15001", "0.0.0.0", 15001, False),
        ("[::]:8080", "::", 8080, False),
        ("10.0.0.7:9000", "10.0.0.7", 9000, False),
    ],
    ids=["v4-loopback", "v4-loopback-range", "v6-loopback", "ephemeral", "any-v4", "any-v6", "lan"],
)
def test_bind_address_parses_and_classifies(
    text: str, host: str, port: int, loopback: bool
) -> None:
    """Bind addresses parse to host and port and know whether they are loopback."""
    address = BindAddress.parse(text)
    assert (address.host, address.port, address.is_loopback) == (host, port, loopback)
    assert str(address) == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("127.0.0.1", "has no port"),
        ("::1:15001", "write IPv6 addresses in brackets"),
        ("127.0.0.1:70000", "port '70000' is not a number from 0 to 65535"),
        ("bad host:1", "is not a hostname or IP address"),
    ],
    ids=["no-port", "bare-ipv6", "port-range", "bad-host"],
)
def test_bind_address_rejects_malformed(text: str, fragment: str) -> None:
    """Malformed bind addresses are refused with the reason."""
    with pytest.raises(ValueError, match=re.escape(fragment)):
        BindAddress.parse(text)


@pytest.mark.parametrize(
    ("text", "url", "authority", "tls"),
    [
        ("http://payments:8080", "http://payments:8080", "payments:8080", False),
        ("https://API.example.com", "https://api.example.com", "api.example.com:443", True),
        ("http://example.com/", "http://example.com", "example.com:80", False),
        ("https://[::1]:8443", "https://[::1]:8443", "[::1]:8443", True),
        ("http://10.1.2.3:80", "http://10.1.2.3", "10.1.2.3:80", False),
    ],
    ids=["http-port", "https-default", "trailing-slash", "ipv6", "explicit-default-port"],
)
def test_endpoint_parses_to_canonical_form(text: str, url: str, authority: str, tls: bool) -> None:
    """Endpoints are lowercased, default ports filled in the authority, and TLS known."""
    endpoint = Endpoint.parse(text)
    assert (endpoint.url, endpoint.authority, endpoint.tls) == (url, authority, tls)


def test_endpoint_keeps_ipv6_host_without_brackets() -> None:
    """The `host` of an IPv6 endpoint has no brackets; the authority has them."""
    endpoint = Endpoint.parse("http://[::1]:8080")
    assert (endpoint.host, endpoint.port, endpoint.scheme) == ("::1", 8080, "http")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ftp://files", "must start with http:// or https://"),
        ("payments:8080", "must start with http:// or https://"),
        ("http://user:pw@payments", "credentials in endpoint URLs are not supported"),
        ("http://payments/api", "without a path or query"),
        ("http://payments?x=1", "without a path or query"),
        ("http://", "has no host"),
        ("http://payments:0", "port 0"),
    ],
    ids=["scheme", "no-scheme", "userinfo", "path", "query", "no-host", "port-zero"],
)
def test_endpoint_rejects_what_it_cannot_route(text: str, fragment: str) -> None:
    """An endpoint with a path, query, credentials or another scheme is refused."""
    with pytest.raises(ValueError, match=re.escape(fragment)):
        Endpoint.parse(text)


def test_default_config_matches_spec_3_1() -> None:
    """The embedded default: admin :15000, one loopback forward listener :15001, allow."""
    config = default_config()
    assert str(config.admin.bind) == "127.0.0.1:15000"
    assert [(lst.name, str(lst.bind), lst.upstream) for lst in config.listeners] == [
        ("egress", "127.0.0.1:15001", None)
    ]
    assert config.forward.unknown_hosts is UnknownHosts.ALLOW
    assert config.upstreams == {}


def test_policy_defaults_match_spec_3_2() -> None:
    """Every policy default equals the value SPEC §3.2 shows."""
    policy = default_config().defaults
    t, r, b = policy.timeouts, policy.retries, policy.circuit_breaker
    assert (t.connect, t.per_try, t.total, t.idle) == (1.0, 5.0, 15.0, 60.0)
    assert r.max_attempts == 3
    assert r.on == ("connect-failure", "reset", "timeout", 502, 503, 504)
    assert r.methods == ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
    assert (r.backoff.initial, r.backoff.max, r.backoff.multiplier, r.backoff.jitter) == (
        0.025,
        1.0,
        2.0,
        "full",
    )
    assert (r.respect_retry_after, r.max_retry_after, r.buffer_limit) == (True, 5.0, 1 << 20)
    assert (r.budget.ratio, r.budget.min_per_second, r.budget.window) == (0.2, 10.0, 10.0)
    assert (b.enabled, b.window, b.minimum_calls, b.failure_rate, b.slow_call_rate) == (
        True,
        30.0,
        10,
        0.5,
        1.0,
    )
    assert (b.slow_call_duration, b.consecutive_failures, b.open_duration) == (5.0, 5, 5.0)
    assert (b.max_open_duration, b.half_open_calls) == (60.0, 3)
    assert b.failure_on == ("5xx", "connect-failure", "reset", "timeout")
    bulkhead = policy.bulkhead
    assert (bulkhead.max_concurrent, bulkhead.max_queued, bulkhead.queue_timeout) == (100, 100, 1.0)
    assert (policy.rate_limit, policy.faults) == (None, None)
    assert (policy.fallback.cache, policy.fallback.static) == (None, None)


def test_process_defaults_match_spec_3_2() -> None:
    """Limits, shutdown, forward, access log and response headers default as in SPEC §3.2."""
    config = default_config()
    assert (config.limits.max_connections, config.limits.header_timeout) == (1024, 10.0)
    assert config.limits.max_header_bytes == 64 * 1024
    assert (config.shutdown.drain_delay, config.shutdown.drain_timeout) == (5.0, 15.0)
    assert config.forward.max_implicit_upstreams == 100
    assert (config.access_log.enabled, config.access_log.include_query) == (True, False)
    assert config.response_headers is True


def test_upstream_defaults_match_spec_3_2() -> None:
    """Upstream-only sections and an enabled cache default as in SPEC §3.2."""
    text = one_upstream("    fallback: {cache: {}, static: {}}\n")
    upstream = load_config_text(text).upstreams["payments"]
    assert upstream.hosts == ("payments:8080",)
    assert upstream.load_balancing is LoadBalancing.ROUND_ROBIN
    assert (upstream.tls.verify, upstream.tls.ca_file, upstream.tls.server_name) == (
        True,
        None,
        None,
    )
    outlier = upstream.outlier_detection
    assert (outlier.consecutive_failures, outlier.base_ejection, outlier.max_ejected) == (
        5,
        30.0,
        0.5,
    )
    cache = upstream.fallback.cache
    assert cache is not None
    assert (cache.methods, cache.max_stale, cache.max_entries) == (("GET", "HEAD"), 300.0, 10000)
    assert (cache.max_bytes, cache.max_body, cache.key_headers) == (64 << 20, 1 << 20, ("accept",))
    assert cache.serve_on == (
        "circuit-open",
        "timeout",
        "connect-failure",
        "reset",
        "5xx",
        "bulkhead-full",
    )
    assert upstream.fallback.static is not None
    assert upstream.fallback.static.status == 503


def test_failure_lists_normalize_statuses_to_ints() -> None:
    """Status codes in condition lists become ints whether written as 503 or '503'."""
    text = one_upstream(
        "    retries: {on: [Reset, '503', 429]}\n    circuit_breaker: {failure_on: [5xx, 429]}\n"
    )
    upstream = load_config_text(text).upstreams["payments"]
    assert upstream.retries.on == (FailureKind.RESET, 503, 429)
    assert upstream.circuit_breaker.failure_on == (FailureKind.HTTP_5XX, 429)


def test_methods_and_key_headers_are_normalized() -> None:
    """Methods are uppercased and cache key headers lowercased."""
    text = one_upstream(
        "    retries: {methods: [get, Post]}\n"
        "    fallback: {cache: {key_headers: [Accept, X-Tenant]}}\n"
    )
    upstream = load_config_text(text).upstreams["payments"]
    assert upstream.retries.methods == ("GET", "POST")
    assert upstream.fallback.cache is not None
    assert upstream.fallback.cache.key_headers == ("accept", "x-tenant")


def test_hosts_are_lowercased_and_default_to_endpoint_authorities() -> None:
    """Explicit hosts are normalized; without them the endpoints' authorities are claimed."""
    text = (
        "version: 1\nupstreams:\n"
        "  a: {endpoints: ['http://A:81', 'https://b']}\n"
        "  c: {endpoints: ['http://c'], hosts: [C, 'C.example:8080']}\n"
    )
    config = load_config_text(text)
    assert config.upstreams["a"].hosts == ("a:81", "b:443")
    assert config.upstreams["c"].hosts == ("c", "c.example:8080")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "    circuit_breaker: {open_duration: 2m}\n",
            "upstreams.payments.circuit_breaker.open_duration: max_open_duration (1m) "
            "must be at least open_duration (2m)",
        ),
        (
            "    retries: {max_attempts: 0}\n",
            "upstreams.payments.retries.max_attempts: must be at least 1, got 0",
        ),
        (
            "    outlier_detection: {max_ejected: 150%}\n",
            "upstreams.payments.outlier_detection.max_ejected: '150%' is outside 0%–100%",
        ),
        (
            "    faults: {abort: {percent: 5%}}\n",
            "upstreams.payments.faults.abort: set exactly one of status (e.g. 503) or reset: true",
        ),
        (
            "    faults: {abort: {status: 503, reset: true}}\n",
            "upstreams.payments.faults.abort.status: status and reset: true cannot both be set",
        ),
        (
            "    faults: {abort: {status: 700}}\n",
            "upstreams.payments.faults.abort.status: must be at most 599, got 700",
        ),
        (
            "    fallback: {static: {status: 99}}\n",
            "upstreams.payments.fallback.static.status: must be at least 200, got 99",
        ),
        (
            "    fallback: {static: {body: x, body_file: x.json}}\n",
            "upstreams.payments.fallback.static.body_file: 'x.json' does not exist",
        ),
        (
            "    fallback: {static: {headers: {content-length: '5'}}}\n",
            "upstreams.payments.fallback.static.headers.content-length: "
            "'content-length' cannot be set: the sidecar frames the body",
        ),
        (
            "    fallback: {cache: {max_body: 2MiB, max_bytes: 1MiB}}\n",
            "upstreams.payments.fallback.cache.max_body: max_body (2MiB) must not exceed "
            "max_bytes (1MiB)",
        ),
        (
            "    retries: {backoff: {initial: 2s}}\n",
            "upstreams.payments.retries.backoff.initial: max (1s) must be at least initial (2s)",
        ),
        (
            "    retries: {on: [circuit-open]}\n",
            "upstreams.payments.retries.on[0]: 'circuit-open' is not a retry condition "
            "(use connect-failure, reset, timeout, 5xx or a 4xx/5xx status code like 503)",
        ),
        (
            "    circuit_breaker: {failure_on: [200]}\n",
            "upstreams.payments.circuit_breaker.failure_on[0]: 200 is not a breaker failure: "
            "only 4xx and 5xx status codes can be listed",
        ),
        (
            "    circuit_breaker: {window: {calls: 0}}\n",
            "upstreams.payments.circuit_breaker.window.calls: must be at least 1, got 0",
        ),
        (
            "    load_balancing: fastest\n",
            "upstreams.payments.load_balancing: 'fastest' is not valid here "
            "(expected 'round_robin', 'least_request' or 'random')",
        ),
        (
            "    health_check: {path: health}\n",
            "upstreams.payments.health_check.path: 'health' must start with '/'",
        ),
        (
            "    routes: [{match: {path: /a, path_prefix: /b}}]\n",
            "upstreams.payments.routes[0].match.path_prefix: set path or path_prefix, not both",
        ),
        (
            "    routes: [{match: {methods: []}}]\n",
            "upstreams.payments.routes[0].match.methods: an empty list matches nothing; "
            "omit it to match all",
        ),
        (
            "    routes: [{name: r, match: {}}, {name: r, match: {}}]\n",
            "upstreams.payments.routes[1].name: route name 'r' is used twice",
        ),
        (
            "    rate_limit: {rps: 0, burst: 1}\n",
            "upstreams.payments.rate_limit.rps: must be greater than 0, got 0",
        ),
    ],
    ids=[
        "open-duration",
        "max-attempts",
        "percent-range",
        "abort-neither",
        "abort-both",
        "abort-status-range",
        "static-status-range",
        "static-two-bodies",
        "static-framing-header",
        "cache-body-over-bytes",
        "backoff-order",
        "retry-condition",
        "breaker-status",
        "count-window",
        "load-balancing",
        "health-path",
        "match-path-and-prefix",
        "match-empty-methods",
        "route-names",
        "rate-limit",
    ],
)
def test_upstream_rules_name_field_value_and_valid(extra: str, expected: str) -> None:
    """Each per-upstream rule reports the field, the value and what would be valid."""
    found = issues(one_upstream(extra))
    assert len(found) == 1, found
    assert found[0].startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\nlisteners:\n  - {name: p, bind: '127.0.0.1:15002', upstream: paymnts}\n"
            "upstreams:\n  payments: {endpoints: [http://p]}\n",
            "listeners[0].upstream: 'paymnts' is not a configured upstream "
            "(did you mean 'payments'?)",
        ),
        (
            "version: 1\nlisteners:\n  - {name: a, bind: '127.0.0.1:15001'}\n"
            "  - {name: b, bind: '127.0.0.1:15001'}\n",
            "listeners[1].bind: 127.0.0.1:15001 is already used by listener 'a' (listeners[0])",
        ),
        (
            "version: 1\nlisteners:\n  - {name: a, bind: '127.0.0.1:15001'}\n"
            "  - {name: b, bind: '0.0.0.0:15001'}\nforward: {unknown_hosts: deny}\n",
            "listeners[1].bind: 0.0.0.0:15001 is already used by listener 'a' (listeners[0])",
        ),
        (
            "version: 1\nlisteners:\n  - {name: a, bind: '127.0.0.1:15000'}\n",
            "listeners[0].bind: 127.0.0.1:15000 is the admin address (127.0.0.1:15000)",
        ),
        (
            "version: 1\nlisteners:\n  - {name: a, bind: '127.0.0.1:1'}\n"
            "  - {name: a, bind: '127.0.0.1:2'}\n",
            "listeners[1].name: 'a' is already the name of listeners[0]",
        ),
        (
            "version: 1\nupstreams:\n  a: {endpoints: [http://x:80]}\n"
            "  b: {endpoints: [http://y], hosts: ['x:80']}\n",
            "upstreams.b.hosts[0]: 'x:80' is already claimed by upstream 'a'",
        ),
        (
            "version: 1\nlisteners:\n  - {name: egress, bind: '0.0.0.0:15001'}\n",
            "listeners[0].bind: 0.0.0.0:15001 is not loopback, so forward.unknown_hosts must be "
            "deny (allow would make this an open proxy)",
        ),
        (
            "version: 1\nadmin: {bind: '0.0.0.0:15000'}\n",
            "admin.bind: 0.0.0.0:15000 is not loopback, so admin.token_file is required",
        ),
        (
            "version: 1\nlisteners: []\n",
            "listeners: at least one listener is needed",
        ),
        (
            "version: 1\nupstreams:\n  'bad name': {endpoints: [http://x]}\n",
            "upstreams['bad name']: 'bad name' is not a valid name",
        ),
        (
            "version: 1\nupstreams:\n  other: {endpoints: [http://x]}\n",
            "upstreams.other: 'other' is reserved for the shared implicit upstream",
        ),
        (
            "version: 1\nupstreams:\n  self: {endpoints: ['http://127.0.0.1:15001']}\n",
            "upstreams.self.endpoints[0]: http://127.0.0.1:15001 is one of the sidecar's own "
            "addresses (a loop)",
        ),
    ],
    ids=[
        "missing-upstream",
        "same-address",
        "wildcard-overlap",
        "admin-address",
        "duplicate-listener-name",
        "host-claimed-twice",
        "open-proxy",
        "exposed-admin",
        "no-listener",
        "label-unsafe-name",
        "reserved-name",
        "loop",
    ],
)
def test_cross_section_rules_are_errors(text: str, expected: str) -> None:
    """Contradictions between sections (SPEC §3.3) are reported at the field to change."""
    found = issues(text)
    assert len(found) == 1, found
    assert found[0].startswith(expected)


def test_upstream_rejects_duplicate_endpoints() -> None:
    """The same endpoint listed twice (in any spelling) is an error at the second one."""
    text = "version: 1\nupstreams:\n  payments:\n    endpoints: [http://a, http://A/]\n"
    assert issues(text) == ["upstreams.payments.endpoints[1]: http://a is listed twice"]


def test_cross_rules_allow_port_zero_twice() -> None:
    """Two listeners on port 0 do not collide: each gets its own free port."""
    text = (
        "version: 1\nlisteners:\n  - {name: a, bind: '127.0.0.1:0'}\n"
        "  - {name: b, bind: '127.0.0.1:0'}\nadmin: {bind: '127.0.0.1:0'}\n"
    )
    assert len(load_config_text(text).listeners) == 2


def test_cross_rules_accept_exposed_admin_with_token() -> None:
    """A non-loopback admin bind is fine once a token file is configured."""
    text = "version: 1\nadmin: {bind: '0.0.0.0:15000', token_file: /run/secrets/admin-token}\n"
    config = load_config_text(text)
    assert str(config.admin.token_file) == "/run/secrets/admin-token"


def test_cross_rules_accept_deny_on_exposed_forward_listener() -> None:
    """A non-loopback forward listener is fine when unknown hosts are denied."""
    text = (
        "version: 1\nlisteners: [{name: egress, bind: '0.0.0.0:15001'}]\n"
        "forward: {unknown_hosts: deny}\n"
    )
    assert load_config_text(text).forward.unknown_hosts is UnknownHosts.DENY


def test_breaker_rule_applies_to_models_built_in_python() -> None:
    """Model rules hold without the loader too: the message names both fields."""
    with pytest.raises(ValidationError, match=r"max_open_duration \(1s\) must be at least"):
        BreakerPolicy.model_validate({"open_duration": "5s", "max_open_duration": "1s"})


def test_abort_fault_accepts_reset_alone() -> None:
    """An abort fault may reset the connection instead of answering with a status."""
    fault = AbortFault.model_validate({"percent": "5%", "reset": True})
    assert (fault.percent, fault.status, fault.reset) == (0.05, None, True)


@pytest.mark.parametrize(
    ("route", "label"),
    [
        ({"name": "reports", "match": {"path_prefix": "/r"}}, "reports"),
        ({"match": {"path": "/v1/charge"}}, "/v1/charge"),
        ({"match": {"path_prefix": "/v1/reports"}}, "/v1/reports"),
        ({"match": {"methods": ["get", "head"]}}, "GET,HEAD"),
        ({"match": {}}, "*"),
    ],
    ids=["name", "path", "prefix", "methods", "catch-all"],
)
def test_route_label_prefers_name_then_path(route: dict[str, object], label: str) -> None:
    """A route's metric label is its name, else its path or prefix, else its methods, else *."""
    assert RouteConfig.model_validate(route).label == label


def test_route_match_requires_leading_slash() -> None:
    """Paths in a match must start with '/'."""
    with pytest.raises(ValidationError, match="must start with '/'"):
        RouteMatch.model_validate({"path_prefix": "v1"})


def test_implicit_upstream_uses_defaults_policy() -> None:
    """An implicit upstream carries the `defaults` policy and the seen host as endpoint."""
    config = load_config_text("version: 1\ndefaults:\n  timeouts: {total: 3s}\n")
    upstream = config.implicit_upstream(
        "api.example.com:443", Endpoint.parse("https://api.example.com")
    )
    assert isinstance(upstream, UpstreamConfig)
    assert upstream.name == "api.example.com:443"
    assert upstream.timeouts.total == 3.0
    assert upstream.hosts == ("api.example.com:443",)
    assert upstream.routes == ()
    assert upstream.tls.verify is True


def test_implicit_overflow_upstream_has_no_endpoints() -> None:
    """The shared `other` upstream has no endpoints: requests go to their own authority."""
    upstream = default_config().implicit_upstream("other", None)
    assert (upstream.name, upstream.endpoints, upstream.hosts) == ("other", (), ())
    assert upstream.retries == default_config().defaults.retries


def test_configs_compare_by_value() -> None:
    """Two loads of the same text are equal, so a reload can tell unchanged upstreams."""
    text = one_upstream("    timeouts: {total: 5s}\n")
    first, second = load_config_text(text), load_config_text(text)
    assert first == second
    assert first.upstreams["payments"] == second.upstreams["payments"]


def test_json_dump_writes_units_back() -> None:
    """A JSON dump writes durations, sizes and ratios the way the file does."""
    dumped = default_config().model_dump(mode="json")
    assert dumped["defaults"]["timeouts"]["connect"] == "1s"
    assert dumped["defaults"]["retries"]["buffer_limit"] == "1MiB"
    assert dumped["defaults"]["circuit_breaker"]["failure_rate"] == "50%"
    assert dumped["admin"]["bind"] == "127.0.0.1:15000"
    assert "source_path" not in dumped


def test_schema_shows_written_defaults_and_hides_derived_fields() -> None:
    """The JSON schema shows defaults as written in YAML and leaves out loader-derived fields."""
    schema = config_json_schema()
    defs = schema["$defs"]
    assert defs["TimeoutPolicy"]["properties"]["per_try"]["default"] == "5s"
    assert defs["CachePolicy"]["properties"]["max_bytes"]["default"] == "64MiB"
    assert defs["BreakerPolicy"]["properties"]["failure_rate"]["default"] == "50%"
    assert "name" not in defs["UpstreamConfig"]["properties"]
    assert "own_breaker" not in defs["RouteConfig"]["properties"]
    assert "source_path" not in schema["properties"]
    assert schema["required"] == ["version"]
    json.dumps(schema)  # serializable as is


def test_sidecar_config_forbids_unknown_fields_in_python() -> None:
    """Models refuse unknown fields even when built directly."""
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SidecarConfig.model_validate({"version": 1, "listners": []})


def test_breaker_minimum_calls_cannot_exceed_a_count_window() -> None:
    """A count window smaller than minimum_calls would never judge rates: refused, not capped."""
    text = "version: 1\ndefaults:\n  circuit_breaker:\n    window: {calls: 5}\n"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, source="cb.yaml")
    message = str(caught.value)
    assert "defaults.circuit_breaker" in message
    assert "minimum_calls (10) must not exceed window.calls (5)" in message


def test_cache_methods_refuse_unsafe_methods() -> None:
    """A POST answer must never be stored: the key has no body, so another request would get it."""
    text = "version: 1\ndefaults:\n  fallback:\n    cache: {methods: [GET, POST]}\n"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, source="c.yaml")
    assert "defaults.fallback.cache.methods: POST cannot be stored" in str(caught.value)
