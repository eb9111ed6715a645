"""The monosemantic application: command line (and, later, web app and database)."""
