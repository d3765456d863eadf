"""The HTTP edges of the sidecar: the proxy handler, the admin API and the runtime lifecycle."""
