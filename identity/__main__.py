"""`python -m identity` is the `identity` command."""

from identity.cli.main import main

raise SystemExit(main())
