"""Reading (and, for tests, writing) dataset versions in the ``docs/formats.md`` layout."""
