"""Observers that turn events into Prometheus metrics and structured log lines.

Nothing here changes how a request is handled; stages never import this package, they emit
events (`sidecar.events`) and the runtime wires these observers to them.
"""
