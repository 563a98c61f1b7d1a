"""The Celery application: three queues, explicit routing.

- ``gpu``: model inference (detector, local captioners and MLLMs); one process per GPU,
  prefetch 1, model loaded once per process.
- ``llm``: calls to OpenAI-compatible endpoints (I/O bound, high concurrency).
- ``default``: everything else (thumbnails, probes, exports).

The tasks live next to the services they call, in each Django app's ``tasks`` module; this
module names no app, so ``workers/`` never imports the web app. Without ``CELERY_BROKER_URL``
every task runs eagerly in the caller's process.
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("fgam")
app.config_from_object("django.conf:settings", namespace="CELERY")
# gpu-gdino: GPU workers of the separate groundingdino-py environment (requirements/).
app.conf.task_queues = (Queue("default"), Queue("gpu"), Queue("llm"), Queue("gpu-gdino"))
app.conf.task_routes = {
    "fgam.gpu.*": {"queue": "gpu"},
    "fgam.llm.*": {"queue": "llm"},
    "fgam.default.*": {"queue": "default"},
}
# Every installed Django app's ``tasks`` module, imported by name when a worker starts (after
# Django is set up). The web process needs no discovery: a service imports the task it enqueues.
# The task modules register with ``@app.task`` on this app rather than ``shared_task``, which
# only reaches apps Celery still lists as active: after ``app.close()`` a task module imported
# later would register nowhere.
app.autodiscover_tasks()
