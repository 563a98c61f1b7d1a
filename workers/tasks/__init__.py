"""Celery tasks: a few lines each, taking ids; the work lives in services and adapters.

Task names carry their queue (``fgam.<queue>.<name>``) so routing is explicit.
"""

from workers.tasks import catalog, evaluation, exports, runs, trajectories  # noqa: F401  (registers the tasks)
