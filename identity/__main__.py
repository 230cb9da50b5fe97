"""`python -m identity` is the `identity` command."""

from identity.cli import main

raise SystemExit(main())
