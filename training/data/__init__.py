"""Reading (and, for tests, writing) dataset versions in the ``shared/FORMATS.md`` layout."""
