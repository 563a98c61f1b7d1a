"""Celery app, thin task modules, and the plain-Python adapters the tasks call.

Adapters (every module here except ``celery_app`` and ``tasks/``) import nothing from Django.
"""
