"""A resilience sidecar: an HTTP/1.1 proxy that adds timeouts, retries, circuit breakers,
fallbacks and metrics to an application's outbound calls by configuration alone."""

__version__ = "0.1.0"
