"""Every URL pattern, tried by every kind of user with every method, answers as the policy says.

The routes come from the resolver, so a route added tomorrow is tried the day it is added; its
parameters are filled with real objects. A route whose view names no rule of the policy table
(``webapp.core.policy``) fails the test. For each answer:

- refused (the table does not give the user's roles the route's action): anonymous people go
  to the login page (401 from the API), everyone else gets 403, and the database is unchanged;
- allowed: neither 401 nor 403, and never a 5xx; a rater's seat routes answer another rater
  404 (the object rule);
- raters (with and without a seat) never see a system's name, key or id in any answer.

The figures (routes x users x methods, answers differing from the policy, 5xx) are printed;
run with ``-s`` to read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from django.apps import apps
from django.test import Client
from django.urls import NoReverseMatch, URLPattern, URLResolver, get_resolver, reverse

from tests.api.factories import RunFactory
from tests.catalog.factories import RegionFactory, UserFactory, stored_image
from tests.evaluation.conftest import SYSTEM_NAMES, make_round
from tests.trajectories.factories import make_trajectory
from webapp.benchmarks.models import BenchmarkAnswer, BenchmarkJob
from webapp.catalog.models import Dataset
from webapp.core.permissions import api_rule
from webapp.core.policy import ANYONE, DELEGATED, POLICY, rule_of
from webapp.core.roles import ANNOTATOR, CURATOR, RATER, ROLES
from webapp.evaluation.assignment import claim_next
from webapp.exports.models import DatasetVersion, TrainingJob
from webapp.regions import services as region_services
from webapp.trajectories.models import TrajectoryChange

pytestmark = pytest.mark.django_db

METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
USERS = (
    "anonymous",
    "no role",
    "rater without a seat",
    "rater with a seat",
    "annotator",
    "curator",
    "superuser",
)
ROLES_OF = {
    "anonymous": frozenset(),
    "no role": frozenset(),
    "rater without a seat": frozenset({RATER}),
    "rater with a seat": frozenset({RATER}),
    "annotator": frozenset({ANNOTATOR}),
    "curator": frozenset({CURATOR}),
    "superuser": frozenset(ROLES),
}
# Routes whose object is a rater's seat: another rater must not learn anything from them.
SEAT_ROUTES = {
    "evaluation:rate",
    "evaluation:seat_image",
    "evaluation-assignment-detail",
    "evaluation-assignment-ratings",
}
LOGOUTS = {"logout", "admin:logout"}


@dataclass(frozen=True)
class Route:
    pattern: str
    name: str
    params: tuple[str, ...]
    callback: object
    namespace: str


def routes() -> list[Route]:
    found: list[Route] = []

    def walk(patterns, prefix: str, namespace: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + str(entry.pattern), entry.namespace or namespace)
                continue
            assert isinstance(entry, URLPattern)
            regex = entry.pattern.regex
            name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name
            found.append(
                Route(
                    prefix + str(entry.pattern),
                    name or "",
                    tuple(regex.groupindex),
                    entry.callback,
                    namespace,
                )
            )

    walk(get_resolver().url_patterns, "", "")
    return found


@pytest.fixture
def world(media_root):
    """One of everything a route can name, and the people who try them."""
    users = {
        "no role": UserFactory(username="nobody"),
        "rater without a seat": UserFactory(username="rater-b", roles=[RATER]),
        "rater with a seat": UserFactory(username="rater-a", roles=[RATER]),
        "annotator": UserFactory(username="annie", roles=[ANNOTATOR]),
        "curator": UserFactory(username="cora", roles=[CURATOR]),
        "superuser": UserFactory(username="root", is_superuser=True, is_staff=True),
    }
    dataset = Dataset.objects.create(name="matrix")
    image = stored_image(dataset, width=200, height=160)
    region = RegionFactory(image=image)
    region_services.update_region(
        region_id=region.pk,
        expected_version=region.version,
        changes={"caption": "a car"},
        user=users["curator"],
    )
    trajectory = make_trajectory(image)
    version = DatasetVersion.objects.create(name="v-matrix", status="ready")
    version.datasets.add(dataset)
    round_ = make_round(distinctive_ids=True)
    seat = claim_next(round_, users["rater with a seat"])
    objects = {
        "dataset": dataset,
        "image": image,
        "region": region,
        "region_change": region.changes.order_by("pk").last(),
        "trajectory": trajectory,
        "trajectory_change": TrajectoryChange.objects.filter(trajectory=trajectory).first(),
        "run": RunFactory(dataset=dataset),
        "version": version,
        "job": TrainingJob.objects.create(version=version),
        "round": round_,
        "system": round_.systems.first(),
        "assignment": seat,
    }
    objects["benchmark"] = make_benchmark(users["curator"])
    objects["probe_set"] = objects["benchmark"].probe_set
    objects["study"] = make_study(version, users["curator"])
    return users, objects


def make_study(version, user):
    """A one-arm study (the base model on the benchmark's probe set), not started."""
    from webapp.studies.models import Study, StudyStep

    spec = {"name": "matrix-study", "version": str(version.pk), "model": "m", "arms": ["base"],
            "probe_sets": ["matrix-benchmark-probes"]}  # fmt: skip
    study = Study.objects.create(name="matrix-study", version=version, spec=spec, created_by=user)
    StudyStep.objects.create(study=study, key="b" * 64, kind="bench", arms=["base"],
                             config={"model": "m"})  # fmt: skip
    return study


def make_benchmark(user) -> BenchmarkJob:
    """A benchmark job on a ready probe set, with one wrong answer (probe id "0")."""
    from webapp.probes.models import ProbeSet

    probe_set = ProbeSet.objects.create(
        set_id="matrix-benchmark-probes", kind="pope", split="random", status="ready"
    )
    job = BenchmarkJob.objects.create(probe_set=probe_set, model_spec="x", created_by=user)
    BenchmarkAnswer.objects.create(
        job=job, position=0, probe_id="0", split="random", object="car",
        question="Is there a car in the image?", expected="yes", answer="no", strict="no",
        image_sha256="0" * 64,
    )  # fmt: skip
    return job


# What a ``pk`` is, by the route's name (HTML) or router basename prefix (API).
PK_OF = [
    (r"^catalog:image_", "image"),
    (r"^regions:(review_image|next_image|region_create|accept_all|undo|review_mark)$", "image"),
    (r"^regions:(region|region_action|region_delete|history)$", "region"),
    (r"^trajectories:", "trajectory"),
    (r"^jobs:", "run"),
    (r"^exports:job_", "job"),
    (r"^benchmarks:", "benchmark"),
    (r"^probes:", "probe_set"),
    (r"^studies:", "study"),
    (r"^exports:", "version"),
    (r"^evaluation:(rate|seat_image)$", "assignment"),
    (r"^evaluation:(responses_import|generate)$", "system"),
    (r"^evaluation:", "round"),
    (r"^dataset-", "dataset"),
    (r"^image-", "image"),
    (r"^region-", "region"),
    (r"^run-", "run"),
    (r"^version-", "version"),
    (r"^training-job-", "job"),
    (r"^benchmark-", "benchmark"),
    (r"^probe-set-", "probe_set"),
    (r"^study-", "study"),
    (r"^trajectory-", "trajectory"),
    (r"^evaluation-round-", "round"),
    (r"^evaluation-system-", "system"),
    (r"^evaluation-assignment-", "assignment"),
]


def url_of(route: Route, objects: dict) -> str:
    values: dict[str, str] = {}
    for param in route.params:
        if param == "pk":
            kind = next(kind for pattern, kind in PK_OF if re.search(pattern, route.name))
            values[param] = str(objects[kind].pk)
        elif param == "name":
            values[param] = objects["dataset"].name
        elif param == "change_id":
            kind = "region_change" if route.namespace == "regions" else "trajectory_change"
            values[param] = str(objects[kind].pk)
        elif param == "format":
            values[param] = ".json" if route.name == "api-root" else "json"
        elif param == "probe_id":
            values[param] = "0"
        elif param == "table":
            values[param] = "table5"
        elif param == "fmt":
            values[param] = "csv"
        elif param in ("object_id", "content_type_id"):
            values[param] = "1"
        elif param == "app_label":
            values[param] = "catalog"
        else:  # the admin's catch-all and the like
            values[param] = "x"
    try:
        return reverse(route.name, kwargs=values)
    except NoReverseMatch:
        # Patterns that share a name (format suffixes): build this one from its regex.
        path = "/" + route.pattern
        for param, value in values.items():
            path = re.sub(rf"\(\?P<{param}>[^)]*\)", value, path)
            path = re.sub(rf"<(\w+:)?{param}>", value, path)
        return path.replace("^", "").replace("$", "").replace("\\.", ".").replace("/?", "/")


@dataclass(frozen=True)
class Expected:
    kind: str  # "refused", "allowed", "object-refused", "delegated"
    html: bool


def expected(route: Route, user: str, method: str) -> Expected:
    """What the policy table says about this user using this route with this method."""
    if route.namespace == "admin":
        assert "admin" in DELEGATED
        return Expected("delegated", True)
    rule = rule_of(route.callback)
    cls = getattr(route.callback, "cls", None)
    if rule is not None:
        resource, action, html = rule.resource, rule.action_for(method), True
    elif cls is not None and getattr(cls, "policy_resource", None):
        actions = getattr(route.callback, "actions", None) or {}
        view = cls()
        view.action = actions.get(method.lower()) or (
            actions.get("get") if method == "HEAD" else None
        )
        resource, action = api_rule(view, method)
        html = False
    else:
        pytest.fail(f"{route.pattern} ({route.name}) is not in the policy table", pytrace=False)
    allowed = POLICY[resource].get(action, frozenset())
    if ANYONE in allowed or allowed & ROLES_OF[user]:
        # OPTIONS describes the route, not the object: it tells another rater nothing.
        if route.name in SEAT_ROUTES and user == "rater without a seat" and method != "OPTIONS":
            return Expected("object-refused", html)
        return Expected("allowed", html)
    return Expected("refused", html)


def agrees(route: Route, user: str, exp: Expected, status: int, location: str) -> bool:
    if status >= 500:
        return False
    if exp.kind == "delegated":
        if user == "superuser" or route.name == "admin:login":
            return True
        # The admin sends everyone else to its login (or, from its logout, to its index);
        # someone not logged in meets the site's login first.
        return status == 302 and location.startswith(("/admin/", "/login/"))
    if exp.kind == "allowed":
        if route.name in LOGOUTS:
            return True  # logging out ends at the login page
        return status not in (401, 403) and not (status == 302 and "/login/" in location)
    if exp.kind == "object-refused":
        return status in (404, 405, 409)
    if user == "anonymous":
        return status == 401 if not exp.html else status == 302 and "/login/" in location
    rule = rule_of(route.callback)
    if rule is not None and rule.refused_redirect and user != "no role":
        return status == 302 and location == reverse(rule.refused_redirect)
    return status == 403


def row_counts() -> dict[str, int]:
    return {model._meta.label: model.objects.count() for model in apps.get_models()}


def send(client: Client, method: str, url: str):
    if method in ("GET", "HEAD", "OPTIONS"):
        return getattr(client, method.lower())(url)
    return getattr(client, method.lower())(url, data={} if method == "POST" else "")


def secrets_of(objects: dict) -> list[str]:
    round_ = objects["round"]
    systems = list(round_.systems.all())
    secrets = [*SYSTEM_NAMES, *(s.key for s in systems)]
    secrets += [str(s.pk) for s in systems]
    secrets += [str(pk) for pk in round_.items.values_list("responses__pk", flat=True)]
    return secrets


@pytest.mark.parametrize("user", USERS)
def test_every_route_answers_every_user_as_the_policy_says(world, user, settings):
    users, objects = world
    client = Client()
    if user != "anonymous":
        client.force_login(users[user])
    secrets = secrets_of(objects) if ROLES_OF[user] == {RATER} else []
    tried = wrong = errors = 0
    problems: list[str] = []
    for route in routes():
        url = url_of(route, objects)
        for method in METHODS:
            exp = expected(route, user, method)
            refused_write = exp.kind in ("refused", "object-refused") and method in WRITES
            before = row_counts() if refused_write else None
            response = send(client, method, url)
            tried += 1
            location = response.get("Location", "")
            if response.status_code >= 500:
                errors += 1
            if not agrees(route, user, exp, response.status_code, location):
                wrong += 1
                problems.append(
                    f"{method} {url} ({route.name}) as {user}: {response.status_code} "
                    f"{location}, policy says {exp.kind}"
                )
            if before is not None:
                after = row_counts()
                changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
                if changed:
                    problems.append(f"{method} {url} as {user} was refused but wrote {changed}")
            if secrets and 200 <= response.status_code < 300 and not response.streaming:
                body = response.content.decode("utf-8", "replace")
                leaked = [
                    s for s in secrets if re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", body)
                ]
                if leaked:
                    problems.append(f"{method} {url} shows a rater {leaked}")
            if route.name in LOGOUTS and user != "anonymous":
                client.force_login(users[user])
    print(f"\npolicy matrix, {user}: {tried} answers, {wrong} differ from the policy, {errors} 5xx")
    assert not problems, "\n".join(problems[:80]) + f"\n({len(problems)} problems)"
