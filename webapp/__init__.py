"""FGAM Studio web application (Django)."""

# Load the Celery app with Django so tasks enqueued from views and commands use its config.
from workers.celery_app import app as celery_app

__all__ = ("celery_app",)
