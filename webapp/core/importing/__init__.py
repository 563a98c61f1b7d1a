"""What every importer shares, whatever it imports: catalog formats, trajectories, pseudo-labels.

- ``fields``: strict readers of annotation files and their fields, with errors that say where;
- ``report``: per-record errors, the import report, ``ImportFailed``, the ``on_error`` modes;
- ``bulk``: inserts that skip rows already there (``COPY`` on PostgreSQL);
- ``progress``: the progress callback importers report through, and the commands' bar.

The formats themselves live with the app that owns their rows (``webapp.catalog.importing``,
``webapp.trajectories.importing``).
"""
