"""docker-compose.yml refers only to things that exist in the project.

No Docker engine is needed: the file is parsed and every command of a project service is
checked against the code (the Celery app and its queues, the WSGI application, management
commands), so renaming a module or a queue breaks this test instead of a deployment.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

from webapp import celery_app

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# Services built from this repository (the rest are stock images: postgres, redis).
PROJECT_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)
DECLARED_QUEUES = {queue.name for queue in celery_app.conf.task_queues}
# Read by libraries rather than by webapp/settings.py.
LIBRARY_VARIABLES = {"HF_HOME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def option(argv: list[str], *names: str) -> str | None:
    """The value of ``-Q x``, ``-Q=x`` or ``--queues=x`` style options in ``argv``."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def command_of(name: str) -> list[str]:
    command = SERVICES[name].get("command")
    assert isinstance(command, list), f"{name}: write the command as a list, not a shell string"
    return [str(part) for part in command]


def test_the_expected_services_are_declared():
    expected = {"postgres", "redis", "web", "worker-gpu", "worker-llm", "worker-default"}
    assert expected <= set(SERVICES)
    assert SERVICES["postgres"]["image"].startswith("postgres:16")
    assert SERVICES["redis"]["image"].startswith("redis:7")
    assert "healthcheck" in SERVICES["postgres"]


@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")  # whitenoise, no collectstatic
@pytest.mark.parametrize("name", PROJECT_SERVICES)
def test_each_project_command_exists_in_the_project(name):
    argv = command_of(name)
    program = argv[0]
    if program == "celery":
        app_path = option(argv, "-A", "--app")
        assert app_path, f"{name}: celery needs -A"
        module = importlib.import_module(app_path)
        assert module.app is celery_app, f"{name}: -A {app_path} is not the project's Celery app"
        assert "worker" in argv, f"{name}: not a celery worker"
        queues = set((option(argv, "-Q", "--queues") or "").split(","))
        assert queues <= DECLARED_QUEUES, f"{name}: consumes undeclared queues {queues}"
    elif program == "gunicorn":
        [app_spec] = [arg for arg in argv[1:] if re.fullmatch(r"[\w.]+:[\w]+", arg)]
        module_name, attribute = app_spec.split(":")
        application = getattr(importlib.import_module(module_name), attribute)
        assert callable(application), f"{name}: {app_spec} is not a WSGI callable"
        assert "whitenoise.middleware.WhiteNoiseMiddleware" in settings.MIDDLEWARE
    elif program == "python" and argv[1] == "manage.py":
        assert argv[2] in get_commands(), f"{name}: no management command {argv[2]!r}"
    else:
        pytest.fail(f"{name}: the test does not know how to check {argv}")


def test_every_declared_queue_has_a_worker():
    consumed = set()
    for name in PROJECT_SERVICES:
        argv = command_of(name)
        if argv[0] == "celery":
            consumed |= set((option(argv, "-Q", "--queues") or "").split(","))
    assert consumed == DECLARED_QUEUES


def test_the_gpu_worker_reserves_one_nvidia_gpu_and_takes_one_task_at_a_time():
    service = SERVICES["worker-gpu"]
    argv = command_of("worker-gpu")
    assert option(argv, "-Q", "--queues") == "gpu"
    assert option(argv, "--concurrency", "-c") == "1"
    assert option(argv, "--prefetch-multiplier") == "1"
    [device] = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["count"] == 1
    assert device["capabilities"] == ["gpu"]
    assert service["build"]["args"]["EXTRAS"] == "ml"
    assert service["image"] != SERVICES["web"]["image"], "the lean image must not get torch"


def test_the_llm_and_default_workers_consume_their_queues():
    assert option(command_of("worker-llm"), "-Q") == "llm"
    assert option(command_of("worker-llm"), "--concurrency") == "8"
    assert option(command_of("worker-default"), "-Q") == "default"


def test_the_web_app_migrates_before_it_starts():
    depends = SERVICES["web"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert command_of("migrate")[1:3] == ["manage.py", "migrate"]


def test_every_variable_given_to_the_app_is_read_by_the_settings():
    source = (ROOT / "webapp" / "settings.py").read_text()
    env = SERVICES["worker-gpu"]["environment"]  # the shared x-env plus the GPU's own
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG", "MEDIA_ROOT"):
        assert name in env
    unread = [name for name in env if name not in LIBRARY_VARIABLES and f'"{name}"' not in source]
    assert not unread, f"set in docker-compose.yml but never read by settings: {unread}"
    assert env["DEBUG"] == "0"


def test_build_arguments_are_declared_in_the_dockerfile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, flags=re.MULTILINE))
    for name in PROJECT_SERVICES:
        args = SERVICES[name]["build"].get("args", {})
        assert set(args) <= declared, f"{name}: build args {set(args) - declared} not in Dockerfile"
    assert "collectstatic" in dockerfile
