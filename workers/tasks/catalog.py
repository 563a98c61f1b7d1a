"""Catalog tasks. Placeholder module body is filled by the Celery work package."""
