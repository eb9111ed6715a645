"""``python -m app``: the ``monosemantic`` command line."""

from app.cli import main

raise SystemExit(main())
