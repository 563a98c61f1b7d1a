"""The rules of the layout that the code cannot show by itself."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import training
import workers

ROOT = Path(__file__).resolve().parent.parent
# The Celery app and its task modules are the seam that touches the database.
DJANGO_SEAMS = {"workers.celery_app", "workers.tasks"}


def django_free_modules() -> list[str]:
    names = []
    for package in (training, workers):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not any(info.name == s or info.name.startswith(s + ".") for s in DJANGO_SEAMS):
                names.append(info.name)
    return names


def test_training_and_worker_adapters_import_no_django():
    modules = django_free_modules()
    assert "training.geometry" in modules and "workers.imaging" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'django' not in sys.modules, name + ' imported django'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_fixed_top_level_layout_is_there():
    for name in ("webapp", "workers", "training", "templates", "static", "tests"):
        assert (ROOT / name).is_dir(), name
    for name in ("manage.py", "pyproject.toml", "docker-compose.yml", "README.md", "Makefile"):
        assert (ROOT / name).is_file(), name
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111
