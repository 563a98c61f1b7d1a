"""The main menu offers each role only what it may open."""

import pytest
from django.contrib.auth.models import Group

from webapp.core.roles import ANNOTATOR, CURATOR, RATER

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "role, editing, rating", [(RATER, False, True), (ANNOTATOR, True, False), (CURATOR, True, True)]
)
def test_the_menu_offers_each_role_only_the_sections_it_may_open(
    client, django_user_model, role, editing, rating
):
    user = django_user_model.objects.create_user(username=f"u-{role}", password="x")
    user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    # Raters land on their evaluation page: the dataset list is not theirs.
    page = client.get("/", follow=True).content.decode()
    menu = page[page.index('<nav class="mainnav"') : page.index("</nav>")]
    assert ('href="/"' in menu) is editing
    assert ('href="/versions/"' in menu) is editing
    assert ('href="/review/"' in menu) is editing
    assert ('href="/trajectories/"' in menu) is editing
    assert ('href="/evaluation/"' in menu) is rating
    assert f'<span class="role">{role}</span>' in page
    for url, offered in (
        ("/review/", editing),
        ("/trajectories/", editing),
        ("/evaluation/", rating),
        ("/runs/", editing),
        ("/versions/", editing),
    ):
        assert (client.get(url).status_code == 200) is offered, url
