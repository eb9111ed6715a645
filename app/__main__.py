"""``python -m app``: the ``monosemantic`` command line."""

from app.cli.commands import main

raise SystemExit(main())
