"""Tests for `sidecar.config.loader`: interpolation, YAML reading, merging and error reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import (
    ConfigError,
    ConfigIssue,
    CountWindow,
    SidecarConfig,
    load_config,
    load_config_text,
)

UPSTREAM = """\
version: 1
upstreams:
  payments:
    endpoints: [http://payments:8080]
"""


def issues(text: str) -> list[str]:
    """The issues of an invalid config, one string each, as `sidecar check` prints them."""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="c.yaml")
    return [str(issue) for issue in info.value.issues]


def test_config_issue_str_matches_spec_form() -> None:
    """An issue prints as file:line:col: path: message, exactly as SPEC §3.4 shows."""
    issue = ConfigIssue(
        "config/payments.yaml",
        14,
        7,
        "upstreams.payments.timeouts.connect",
        "'1 sec' is not a duration (use e.g. 250ms, 2s, 1m)",
    )
    assert str(issue) == (
        "config/payments.yaml:14:7: upstreams.payments.timeouts.connect: "
        "'1 sec' is not a duration (use e.g. 250ms, 2s, 1m)"
    )


def test_config_issue_str_without_position_or_path() -> None:
    """An issue with no place and no path prints just the source and the message."""
    assert str(ConfigIssue("f.yaml", None, None, "", "cannot be read")) == "f.yaml: cannot be read"


def test_loader_reports_value_error_at_its_line_and_column() -> None:
    """A bad duration is reported at the value the user wrote."""
    text = UPSTREAM + "    timeouts:\n      connect: 1 sec\n"
    assert issues(text) == [
        "c.yaml:6:16: upstreams.payments.timeouts.connect: "
        "'1 sec' is not a duration (use e.g. 250ms, 2s, 1m)"
    ]


def test_config_error_lists_every_issue_one_per_line() -> None:
    """`str(ConfigError)` has one line per issue, in file order."""
    text = "version: 1\nlimits:\n  max_connections: 0\n  header_timeout: 5\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="c.yaml")
    assert str(info.value).splitlines() == [
        "c.yaml:3:20: limits.max_connections: must be at least 1, got 0",
        "c.yaml:4:19: limits.header_timeout: 5 is not a duration: add a unit "
        "(use e.g. 250ms, 2s, 1m)",
    ]


def test_loader_suggests_close_key_for_typo() -> None:
    """A misspelt key is an error pointing at the key, with the closest valid key."""
    text = "version: 1\ndefaults:\n  retries:\n    max_attemps: 2\n"
    assert issues(text) == [
        "c.yaml:4:5: defaults.retries: unknown key 'max_attemps' (did you mean 'max_attempts'?)"
    ]


def test_loader_lists_valid_keys_when_nothing_is_close() -> None:
    """An unknown key with no close match lists the keys that are valid there."""
    (message,) = issues("version: 1\nshutdown:\n  zzz: 1s\n")
    assert "unknown key 'zzz' (valid keys: drain_delay, drain_timeout)" in message


def test_loader_rejects_duplicate_keys() -> None:
    """A key written twice in one mapping is an error naming the first line."""
    (message,) = issues("version: 1\nresponse_headers: true\nresponse_headers: false\n")
    assert message == (
        "c.yaml:3:1: response_headers: duplicate key 'response_headers' (first written on line 2)"
    )


def test_loader_reports_empty_file() -> None:
    """An empty (or comment-only) file says so."""
    assert issues("# nothing here\n") == [
        "c.yaml: the file is empty; a config needs at least `version: 1`"
    ]


@pytest.mark.parametrize(
    ("text", "got"),
    [("- a\n- b\n", "got a list"), ("hello\n", "got the bare value 'hello'")],
    ids=["list", "scalar"],
)
def test_loader_rejects_non_mapping_root(text: str, got: str) -> None:
    """A file whose top level is not a mapping says what it found."""
    (message,) = issues(text)
    assert message.startswith("c.yaml:1:1: expected a mapping with keys version, admin")
    assert message.endswith(got)


def test_loader_reports_yaml_syntax_error_with_position() -> None:
    """Broken YAML is reported with its position, not as a traceback."""
    (message,) = issues("version: 1\nadmin: {bind: \n")
    assert message.startswith("c.yaml:3:1: invalid YAML:")


def test_loader_reports_bare_scalar_where_mapping_needed() -> None:
    """A scalar where a section is expected says a mapping was needed and lists its keys."""
    (message,) = issues("version: 1\ndefaults:\n  timeouts: 5s\n")
    assert message == (
        "c.yaml:3:13: defaults.timeouts: expected a mapping with keys connect, per_try, "
        "total, idle, got the bare value '5s'"
    )


def test_loader_reports_missing_required_key_at_parent() -> None:
    """A missing required key points at the mapping that lacks it and says what it is."""
    (message,) = issues("version: 1\nupstreams:\n  payments: {hosts: [payments]}\n")
    assert message.startswith("c.yaml:3:3: upstreams.payments.endpoints: required key is missing")


def test_loader_requires_version() -> None:
    """A file without `version` is refused."""
    (message,) = issues("response_headers: true\n")
    assert "version: required key is missing" in message


def test_loader_reads_yaml_1_2_booleans_only() -> None:
    """`yes` is a string under YAML 1.2, so a boolean field refuses it instead of guessing."""
    (message,) = issues("version: 1\nresponse_headers: yes\n")
    assert message.endswith("response_headers: expected true or false, got 'yes'")


def test_loader_keeps_on_as_a_key() -> None:
    """`on:` stays the key `on` (YAML 1.1 would have turned it into the boolean true)."""
    config = load_config_text("version: 1\ndefaults:\n  retries:\n    on: [reset]\n")
    assert config.defaults.retries.on == ("reset",)


def test_loader_supports_merge_keys() -> None:
    """`<<: *anchor` merges a mapping; keys written beside it win."""
    text = """\
version: 1
upstreams:
  a:
    endpoints: [http://a]
    timeouts: &fast {connect: 100ms, total: 2s}
  b:
    endpoints: [http://b]
    timeouts:
      <<: *fast
      total: 3s
"""
    config = load_config_text(text)
    assert config.upstreams["b"].timeouts.connect == 0.1
    assert config.upstreams["b"].timeouts.total == 3.0


def test_interpolation_substitutes_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """`${VAR}` is replaced by the variable's value before parsing."""
    monkeypatch.setenv("PAYMENTS_URL", "http://payments.prod:8080")
    monkeypatch.setenv("CONNECT", "300ms")
    text = UPSTREAM.replace("http://payments:8080", "${PAYMENTS_URL}")
    text += "    timeouts: {connect: ${CONNECT}}\n"
    upstream = load_config_text(text).upstreams["payments"]
    assert upstream.endpoints[0].url == "http://payments.prod:8080"
    assert upstream.timeouts.connect == 0.3


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 4.0), ("", 4.0), ("7s", 7.0)],
    ids=["unset", "empty", "set"],
)
def test_interpolation_default_applies_when_unset_or_empty(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: float
) -> None:
    """`${VAR:-default}` uses the default when VAR is unset or empty, like a shell."""
    if value is None:
        monkeypatch.delenv("DRAIN", raising=False)
    else:
        monkeypatch.setenv("DRAIN", value)
    config = load_config_text("version: 1\nshutdown: {drain_delay: ${DRAIN:-4s}}\n")
    assert config.shutdown.drain_delay == expected


def test_interpolation_reports_unset_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset `${VAR}` without default names the variable and its line, and nothing else."""
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    assert issues("version: 1\nshutdown:\n  drain_delay: ${NO_SUCH_VAR}\n") == [
        "c.yaml:3:16: environment variable NO_SUCH_VAR is not set "
        "(set it, or give a default: ${NO_SUCH_VAR:-value})"
    ]


def test_interpolation_ignores_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Placeholders inside YAML comments are left alone."""
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    config = load_config_text("version: 1  # see ${NO_SUCH_VAR}\n")
    assert config.version == 1


def test_interpolation_applies_inside_quoted_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `#` inside a quoted string is not a comment, so placeholders after it are replaced."""
    monkeypatch.setenv("TENANT", "acme")
    text = UPSTREAM + "    fallback:\n      static: {body: 'it''s # ${TENANT}'}  # ${UNSET_X}\n"
    static = load_config_text(text).upstreams["payments"].fallback.static
    assert static is not None
    assert static.body == "it's # acme"


def test_interpolation_escape_writes_literal_placeholder() -> None:
    """`$${X}` writes a literal `${X}`."""
    text = UPSTREAM + "    fallback:\n      static: {body: 'cost $${PRICE}'}\n"
    static = load_config_text(text).upstreams["payments"].fallback.static
    assert static is not None
    assert static.body == "cost ${PRICE}"


def test_interpolation_keeps_error_columns_of_the_original(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error after a substituted value still points at the column the user wrote."""
    monkeypatch.setenv("LONG", "a-much-longer-listener-name")
    text = "version: 1\nlisteners:\n  - {name: ${LONG}, bind: nowhere}\n"
    (message,) = issues(text)
    assert message.startswith("c.yaml:3:27: listeners[0].bind: 'nowhere' has no port")


def test_interpolation_reports_malformed_placeholder() -> None:
    """A placeholder that is not `${NAME}` or `${NAME:-default}` is an error at its column."""
    (message,) = issues("version: 1\nshutdown: {drain_delay: ${1BAD}}\n")
    assert message.startswith("c.yaml:2:25: '${1BAD}' is not a valid placeholder")


def test_merge_defaults_into_upstream_key_by_key() -> None:
    """An upstream overrides single keys of a defaults section and inherits the rest."""
    text = """\
version: 1
defaults:
  timeouts: {connect: 2s, total: 20s}
upstreams:
  payments:
    endpoints: [http://payments:8080]
    timeouts: {total: 5s}
"""
    config = load_config_text(text)
    timeouts = config.upstreams["payments"].timeouts
    assert (timeouts.connect, timeouts.per_try, timeouts.total) == (2.0, 5.0, 5.0)
    assert config.defaults.timeouts.total == 20.0


def test_merge_lists_replace_rather_than_append() -> None:
    """A list in an upstream replaces the default list instead of extending it."""
    text = UPSTREAM + "    retries: {on: [503]}\n"
    assert load_config_text(text).upstreams["payments"].retries.on == (503,)


def test_merge_explicit_null_replaces_default() -> None:
    """`rate_limit: null` in an upstream turns off a rate limit set in defaults."""
    text = UPSTREAM.replace(
        "upstreams:", "defaults:\n  rate_limit: {rps: 10, burst: 5}\nupstreams:"
    )
    config = load_config_text(text + "    rate_limit: null\n")
    assert config.defaults.rate_limit is not None
    assert config.upstreams["payments"].rate_limit is None


def test_merge_route_over_effective_upstream() -> None:
    """A route inherits the upstream's merged policy and overrides its own keys."""
    text = """\
version: 1
defaults:
  timeouts: {connect: 2s}
upstreams:
  payments:
    endpoints: [http://payments:8080]
    timeouts: {total: 5s}
    routes:
      - match: {path_prefix: /reports}
        timeouts: {total: 60s}
        circuit_breaker: {window: {calls: 20}}
      - match: {path: /charge}
"""
    reports, charge = load_config_text(text).upstreams["payments"].routes
    assert (reports.timeouts.connect, reports.timeouts.total) == (2.0, 60.0)
    assert reports.own_breaker is True
    assert reports.circuit_breaker.window == CountWindow(calls=20)
    assert (charge.timeouts.total, charge.own_breaker) == (5.0, False)


def test_merge_reports_defaults_error_once() -> None:
    """A bad value in defaults is reported once, at defaults, however many upstreams inherit it."""
    text = """\
version: 1
defaults:
  bulkhead: {max_concurrent: 0}
upstreams:
  a: {endpoints: [http://a], routes: [{match: {path: /x}}]}
  b: {endpoints: [http://b]}
"""
    assert issues(text) == [
        "c.yaml:3:30: defaults.bulkhead.max_concurrent: must be at least 1, got 0"
    ]


def test_merge_reports_rule_at_the_overriding_line() -> None:
    """A rule broken by an upstream's override points at that upstream, not at defaults."""
    text = """\
version: 1
defaults:
  circuit_breaker: {max_open_duration: 30s}
upstreams:
  payments:
    endpoints: [http://payments:8080]
    circuit_breaker: {open_duration: 40s}
"""
    assert issues(text) == [
        "c.yaml:7:38: upstreams.payments.circuit_breaker.open_duration: "
        "max_open_duration (30s) must be at least open_duration (40s)"
    ]


def test_merge_reports_route_error_at_the_route() -> None:
    """An invalid route override is reported at the route's own line."""
    text = UPSTREAM + "    routes:\n      - match: {path: /x}\n        retries: {max_attempts: 0}\n"
    assert issues(text) == [
        "c.yaml:7:33: upstreams.payments.routes[0].retries.max_attempts: must be at least 1, got 0"
    ]


@pytest.mark.parametrize(
    ("key", "where"),
    [
        ("    name: other-name\n", "upstreams.payments: 'name' cannot be set here"),
        (
            "    routes: [{match: {path: /x}, own_breaker: true}]\n",
            "upstreams.payments.routes[0]: 'own_breaker' cannot be set here",
        ),
    ],
    ids=["upstream-name", "route-own-breaker"],
)
def test_loader_refuses_derived_keys(key: str, where: str) -> None:
    """Keys the loader derives itself cannot be written by hand."""
    (message,) = issues(UPSTREAM + key)
    assert where in message


def test_route_rejects_upstream_only_keys() -> None:
    """A route may not override upstream-wide sections such as the bulkhead."""
    text = UPSTREAM + "    routes: [{match: {path: /x}, bulkhead: {max_queued: 1}}]\n"
    (message,) = issues(text)
    assert (
        "upstreams.payments.routes[0]: unknown key 'bulkhead' (valid keys: name, match," in message
    )


def test_load_config_resolves_body_file_next_to_config(tmp_path: Path) -> None:
    """`body_file` is relative to the config file's folder and the path is kept absolute."""
    (tmp_path / "degraded.json").write_text('{"degraded": true}')
    config_file = tmp_path / "sidecar.yaml"
    config_file.write_text(UPSTREAM + "    fallback:\n      static: {body_file: degraded.json}\n")
    config = load_config(config_file)
    static = config.upstreams["payments"].fallback.static
    assert static is not None
    assert static.body_file == tmp_path / "degraded.json"
    assert static.load_body() == b'{"degraded": true}'
    assert config.source_path == config_file.resolve()


def test_load_config_reports_missing_body_file(tmp_path: Path) -> None:
    """A `body_file` that does not exist is an error at its line."""
    config_file = tmp_path / "sidecar.yaml"
    config_file.write_text(UPSTREAM + "    fallback:\n      static: {body_file: nope.json}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    (issue,) = info.value.issues
    assert (issue.line, issue.path) == (6, "upstreams.payments.fallback.static.body_file")
    assert "'nope.json' does not exist" in issue.message


def test_load_config_reports_unreadable_file(tmp_path: Path) -> None:
    """A missing config file is a ConfigError, not an OSError."""
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value) == f"{missing}: cannot be read: No such file or directory"


def test_load_config_text_returns_frozen_config() -> None:
    """The loaded config is a frozen SidecarConfig with the text's values."""
    config = load_config_text(UPSTREAM)
    assert isinstance(config, SidecarConfig)
    assert config.source_path is None
    with pytest.raises(ValueError, match="frozen"):
        config.upstreams["payments"].timeouts.connect = 3.0  # type: ignore[misc]
