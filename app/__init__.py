"""The monosemantic application on top of ``training``, in layers that each import only the ones before it.

- ``db``: the schema, sessions, migrations and backups;
- ``services``: reads, writes and statistics over the database (queries, estimates, ingest, label
  import/export, the live inspector) and the records they return (``schemas``);
- ``web``: the FastAPI application, its REST routes and HTML pages, which call the same services;
- ``cli``: the ``monosemantic`` command line, which drives ``training`` and the layers above.

``settings`` (the ``MONOSEMANTIC_*`` environment) is shared by all of them.
"""
