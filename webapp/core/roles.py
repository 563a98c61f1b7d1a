"""The three roles of FGAM Studio, as Django groups created by a data migration.

What each role may do is the policy table in ``webapp.core.policy``; this module only says
which roles a user holds.
"""

from __future__ import annotations

from django.db.models import prefetch_related_objects

CURATOR = "curator"
ANNOTATOR = "annotator"
RATER = "rater"
ROLES = (CURATOR, ANNOTATOR, RATER)


def roles_of(user) -> frozenset[str]:
    """The user's roles: none when logged out, every role for a superuser.

    The groups are prefetched onto the user, so the page header's role list reuses them and
    a page asks the database once however often it checks.
    """
    if not user.is_authenticated:
        return frozenset()
    if user.is_superuser:
        return frozenset(ROLES)
    prefetch_related_objects([user], "groups")
    return frozenset(g.name for g in user.groups.all()) & frozenset(ROLES)
