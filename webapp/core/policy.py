"""Who may read and do what: the one policy table of FGAM Studio, and how views apply it.

``POLICY`` maps a resource and an action to the roles allowed it. Every route names its
resource and action once: HTML and file views with the ``allow`` decorator, DRF views with
``policy_resource`` (and ``policy_actions`` for actions that differ from "safe methods read,
the others write") under ``webapp.core.permissions.PolicyPermission``. The object rules that a
role alone cannot decide are functions here too, applied to querysets so that what a user may
not see is a 404, never a 403 that confirms it exists:

- a rater reads only the items, images and responses of the seats they hold (``seats``);
- a dataset restricted to named annotators is invisible to every other annotator, in pages,
  the API, queues and exports (``scope``); curators always see it;
- a user with no role gets a page saying to ask a curator for a role, and nothing else.

The check runs before the request body is read: ``PolicyMiddleware`` applies a view's rule
before Django's CSRF check parses a form, and the API defers its CSRF check until the policy
has allowed the request (``webapp.core.permissions``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from webapp.core.roles import ANNOTATOR, CURATOR, RATER, ROLES, roles_of

READ = "read"
WRITE = "write"
# Rounds as a rater sees them: open and closed ones, without their systems.
READ_BLIND = "read-blind"
IMPORT = "import"
# Anyone, logged in or not: logging in and out, trading a password for a token.
ANYONE = "anyone"

CURATORS = frozenset({CURATOR})
EDITORS = frozenset({CURATOR, ANNOTATOR})
RATERS = frozenset({RATER})
EVERY_ROLE = frozenset(ROLES)

POLICY: dict[str, dict[str, frozenset[str]]] = {
    # The dataset list and image grids; imports, runs started from a dataset, its access list.
    "datasets": {READ: EDITORS, WRITE: CURATORS},
    # Image pages, bytes and thumbnails. Raters get an item's image through their seat.
    # Write: marking images exhaustively reviewed in bulk (the API's only write on images).
    "images": {READ: EDITORS, WRITE: EDITORS},
    # The review queue, region edits, their history.
    "regions": {READ: EDITORS, WRITE: EDITORS},
    # The trajectory queue and editor; importing trajectory files is the curator's.
    "trajectories": {READ: EDITORS, WRITE: EDITORS, IMPORT: CURATORS},
    "runs": {READ: EDITORS, WRITE: CURATORS},
    # Dataset versions and their downloads (annotators see ready versions only).
    "versions": {READ: EDITORS, WRITE: CURATORS},
    "training-jobs": {READ: EDITORS, WRITE: CURATORS},
    # Benchmark jobs, their metrics, wrong answers and probe images (never a rater's).
    "benchmarks": {READ: EDITORS, WRITE: CURATORS},
    # Probe sets (automatic benchmarks built from curated regions); curators build them.
    "probe-sets": {READ: EDITORS, WRITE: CURATORS},
    # Studies: the arms of an ablation trained and scored together; curators start them.
    "studies": {READ: EDITORS, WRITE: CURATORS},
    "webhooks": {READ: CURATORS},
    # Evaluation rounds, their items, systems, responses and results.
    "rounds": {READ_BLIND: CURATORS | RATERS, READ: CURATORS, WRITE: CURATORS},
    # A rater's seats: the blind rating page, claiming the next item, saving ratings.
    "seats": {READ: RATERS, WRITE: RATERS},
    # The OpenAPI schema and its browsable docs.
    "api-docs": {READ: EVERY_ROLE},
    "account": {READ: frozenset({ANYONE}), WRITE: frozenset({ANYONE})},
}

# Routes whose rules are another component's, named here so that every route is accounted for.
DELEGATED = {
    "admin": "Django's admin site: staff members only (is_staff); others go to its login.",
}

NO_ROLE_MESSAGE = "You have no role yet: ask a curator to give you one."


@dataclass(frozen=True)
class Rule:
    """What a route is: a resource of ``POLICY`` and the action it performs on it.

    ``action=None`` means by method: GET, HEAD and OPTIONS read, the other methods write.
    ``refused_redirect`` sends a logged-in user with a role who may not use the route to that
    page instead of a 403 (the dataset list sends raters to their evaluation page).
    """

    resource: str
    action: str | None = None
    refused_redirect: str | None = None

    def __post_init__(self) -> None:
        actions = POLICY.get(self.resource)
        if actions is None:
            raise ValueError(f"unknown resource {self.resource!r}; see POLICY")
        if self.action is not None and self.action not in actions:
            raise ValueError(f"{self.resource!r} has no action {self.action!r}")

    def action_for(self, method: str) -> str:
        if self.action is not None:
            return self.action
        return READ if method in ("GET", "HEAD", "OPTIONS") else WRITE


def allows(user, resource: str, action: str) -> bool:
    """Whether the table lets this user perform ``action`` on ``resource`` (object rules
    aside). An action the table does not list is refused.

    >>> from django.contrib.auth.models import AnonymousUser
    >>> allows(AnonymousUser(), "account", WRITE), allows(AnonymousUser(), "images", READ)
    (True, False)
    """
    allowed = POLICY[resource].get(action, frozenset())
    return ANYONE in allowed or bool(allowed & roles_of(user))


def needs(resource: str, action: str) -> str:
    """The refusal message: which roles the action needs.

    >>> needs("runs", WRITE)
    'This needs the curator role.'
    """
    roles = sorted(POLICY[resource].get(action, ()))
    return f"This needs the {' or '.join(roles) or 'superuser'} role."


def is_curator(user) -> bool:
    return CURATOR in roles_of(user)


def has_no_role(user) -> bool:
    return user.is_authenticated and not roles_of(user)


# --- Object rules ------------------------------------------------------------------------------


def sees_every_dataset(user) -> bool:
    return is_curator(user)


def hidden_datasets(user) -> QuerySet:
    """Restricted datasets the user is not listed on, as a subquery of ids."""
    from webapp.catalog.models import Dataset

    return Dataset.objects.filter(restricted=True).exclude(access__user=user).values("pk")


def scope(queryset: QuerySet, user, dataset: str) -> QuerySet:
    """``queryset`` without the rows of datasets the user may not open.

    ``dataset`` is the lookup from the queryset's model to its dataset (``"image__dataset"``),
    or ``""`` for datasets themselves. One subquery, no extra query; nothing for curators.
    """
    if sees_every_dataset(user):
        return queryset
    if not user.is_authenticated:
        return queryset.none()
    lookup = f"{dataset}__in" if dataset else "pk__in"
    return queryset.exclude(**{lookup: hidden_datasets(user)})


def scope_versions(queryset: QuerySet, user) -> QuerySet:
    """Versions without those cut from a dataset the user may not open."""
    if sees_every_dataset(user):
        return queryset
    if not user.is_authenticated:
        return queryset.none()
    return queryset.exclude(datasets__in=hidden_datasets(user))


def seats(queryset: QuerySet, user, rater: str = "rater") -> QuerySet:
    """Only the rows of seats the user holds (``rater`` is the lookup to the seat's rater)."""
    return queryset.filter(**{rater: user})


# --- HTML and file views -----------------------------------------------------------------------


def no_role_page(request: HttpRequest) -> HttpResponse:
    return render(request, "core/no_role.html", {"message": NO_ROLE_MESSAGE}, status=403)


def refusal(request: HttpRequest, rule: Rule) -> HttpResponse | None:
    """The answer to a request the rule refuses, or ``None`` when it is allowed."""
    action = rule.action_for(request.method or "GET")
    user = request.user
    if allows(user, rule.resource, action):
        return None
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not roles_of(user):
        return no_role_page(request)
    if rule.refused_redirect:
        return HttpResponseRedirect(reverse(rule.refused_redirect))
    raise PermissionDenied(needs(rule.resource, action))


def allow(resource: str, action: str | None = None, *, refused_redirect: str | None = None):
    """Decorate a view with its rule; a request the rule refuses never reaches the view.

    ``PolicyMiddleware`` applies the same rule earlier, before anything reads the body; the
    check here keeps the view safe when it is called without the middleware.
    """
    rule = Rule(resource, action, refused_redirect)

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def checked(request, *args, **kwargs):
            refused = refusal(request, rule)
            if refused is not None:
                return refused
            return view(request, *args, **kwargs)

        checked.policy = rule  # type: ignore[attr-defined]
        return checked

    return decorate


def rule_of(view: Callable) -> Rule | None:
    """The rule ``allow`` attached to a view function, if any."""
    return getattr(view, "policy", None)
