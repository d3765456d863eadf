"""`python -m sidecar` runs the same command line as the `sidecar` script."""

from sidecar.cli import main

raise SystemExit(main())
