"""pytest plugin (``-p webapp.pytest_env`` in pyproject): environment defaults for test runs.

It loads before pytest-django reads the settings, which a conftest cannot do.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
