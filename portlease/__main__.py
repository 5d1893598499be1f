"""``python -m portlease``: the same as the ``portlease`` command."""

from portlease.cli import main

raise SystemExit(main())
