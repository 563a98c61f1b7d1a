"""The Celery app, and the plain-Python adapters the tasks (``webapp/<app>/tasks.py``) call.

Adapters (every module here except ``celery_app``) import nothing from Django.
"""
