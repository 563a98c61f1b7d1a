"""The rules of the layout that the code cannot show by itself."""

import ast
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import training
import workers

ROOT = Path(__file__).resolve().parent.parent
# The Celery app reads its settings from Django; the tasks live in the web app's apps.
DJANGO_SEAMS = {"workers.celery_app"}


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


MODELS = re.compile(r"webapp\.\w+\.models")


def _package_of(module: str) -> str | None:
    """The package a module belongs to for the layering rule: each Django app of ``webapp``,
    the project modules of ``webapp`` (settings, urls), ``workers`` and ``training``."""
    parts = module.split(".")
    if parts[0] == "webapp" and len(parts) > 1 and (ROOT / "webapp" / parts[1]).is_dir():
        return f"webapp.{parts[1]}"
    return parts[0] if parts[0] in ("webapp", "workers", "training") else None


def package_imports() -> dict[tuple[str, str], list[str]]:
    """Every import between two packages, at any depth (function-level imports count: they
    are dependencies all the same), as ``(importer, imported) -> [module:line, ...]``.

    Imports of another app's ``models`` module are left out: Django's models form one graph
    across apps (foreign keys name their targets as "app.Model" strings, resolved by the app
    registry, and point both ways, e.g. a Run points to its Dataset and an Image to the Run
    that imported it), so every app's code may read any app's models. The rule is about code:
    services, views, tasks and adapters import one way.
    """
    edges: dict[tuple[str, str], list[str]] = {}
    for top in ("webapp", "workers", "training"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            source = _package_of(module)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    if MODELS.fullmatch(node.module):
                        continue
                    targets = [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                for target in targets:
                    package = _package_of(target)
                    if package and package != source:
                        edges.setdefault((source, package), []).append(f"{module}:{node.lineno}")
    return edges


def test_no_import_circle_between_packages():
    edges = package_imports()
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return False

    circles = [
        f"{a} -> {b} ({', '.join(places[:3])}) and back"
        for (a, b), places in sorted(edges.items())
        if reaches(b, a)
    ]
    assert not circles, "imports must run one way:\n" + "\n".join(circles)
    # webapp -> workers -> training, never back.
    backwards = [
        (source, target)
        for source, target in edges
        if (source, target) == ("training", "workers")
        or (source in ("workers", "training") and target.startswith("webapp"))
    ]
    assert not backwards, backwards
