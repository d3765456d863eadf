"""HTTP/1.1 wire details shared by the downstream and upstream sides: header rules, framing.

Parsing itself is llhttp's (through httptools); this package only decides which headers cross
the proxy and how bodies are framed, so both directions apply the same rules.
"""
