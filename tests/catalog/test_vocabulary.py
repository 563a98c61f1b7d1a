"""One vocabulary per dataset: phrases normalised, aliases applied, names counted."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.catalog.factories import DatasetFactory, ImageFactory, RegionFactory, UserFactory
from webapp.catalog import vocabulary
from webapp.catalog.models import DatasetAccess, VocabularyAlias
from webapp.catalog.vocabulary import AliasRefused, normalise, set_alias, vocabulary_counts
from webapp.regions.models import Region

ACCEPTED = Region.Status.ACCEPTED


@pytest.mark.parametrize(
    ("phrase", "name"),
    [
        ("  The   Red  CARS ", "red car"),
        ("a dog.", "dog"),
        ("an apple", "apple"),
        ("men", "man"),
        ("Women", "woman"),
        ("people", "person"),
        ("children", "child"),
        ("mice", "mouse"),
        ("feet", "foot"),
        ("teeth", "tooth"),
        ("geese", "goose"),
        ("strawberries", "strawberry"),
        ("cookies", "cookie"),
        ("ties", "tie"),
        ("knives", "knife"),
        ("shelves", "shelf"),
        ("gloves", "glove"),
        ("buses", "bus"),
        ("glasses", "glasses"),
        ("dresses", "dress"),
        ("boxes", "box"),
        ("benches", "bench"),
        ("dishes", "dish"),
        ("horses", "horse"),
        ("vases", "vase"),
        ("tomatoes", "tomato"),
        ("grass", "grass"),
        ("bus", "bus"),
        ("cactus", "cactus"),
        ("tennis", "tennis"),
        ("pants", "pants"),
        ("jeans", "jeans"),
        ("scissors", "scissors"),
        ("tennis rackets", "tennis racket"),
        ("cars parked", "cars parked"),
        ("the", "the"),
        ("", ""),
    ],
)
def test_it_normalises_phrases_to_one_spelling(phrase, name):
    assert normalise(phrase) == name


def test_aliases_apply_once_after_the_spelling_rules():
    aliases = {"man": "person", "woman": "person"}
    assert normalise("The men", aliases) == "person"
    assert normalise("Woman", aliases) == "person"
    assert normalise("person", aliases) == "person"
    assert normalise("dogs", aliases) == "dog"


def accepted(image, phrase, n=1, status=ACCEPTED):
    return [RegionFactory(image=image, phrase=phrase, status=status) for _ in range(n)]


@pytest.fixture
def street(db):
    dataset = DatasetFactory(name="street")
    one, two, three = (ImageFactory(dataset=dataset) for _ in range(3))
    accepted(one, "man")
    accepted(one, "men", 2)
    accepted(one, "a car")
    accepted(two, "Man")
    accepted(two, "woman")
    accepted(two, "cars", 3)
    accepted(three, "dog", 4, status=Region.Status.PENDING)
    accepted(three, "dog", 1, status=Region.Status.REJECTED)
    accepted(three, "")
    # Another dataset's regions never count.
    accepted(ImageFactory(), "man", 5)
    return dataset


def test_it_counts_regions_and_distinct_images_per_name(street):
    assert vocabulary_counts(street) == [
        ("car", 4, 2),
        ("man", 4, 2),  # "man" twice and "men" twice on image one: still one image
        ("woman", 1, 1),
    ]


def test_aliases_merge_names_and_the_images_are_counted_once(street):
    set_alias(dataset=street, phrase="Men", name="persons")
    set_alias(dataset=street, phrase="woman", name="person")
    assert VocabularyAlias.objects.get(dataset=street, phrase="man").name == "person"
    assert vocabulary_counts(street) == [("person", 5, 2), ("car", 4, 2)]


def test_image_counts_can_be_left_out(street):
    set_alias(dataset=street, phrase="woman", name="man")
    assert vocabulary_counts(street, count_images=False) == [("man", 5, None), ("car", 4, None)]


def test_other_statuses_can_be_counted(street):
    assert vocabulary_counts(street, status="pending") == [("dog", 4, 1)]


def test_chained_and_empty_aliases_are_refused(street):
    set_alias(dataset=street, phrase="man", name="person")
    with pytest.raises(AliasRefused, match="itself mapped"):
        set_alias(dataset=street, phrase="boy", name="man")
    with pytest.raises(AliasRefused, match="is the name of"):
        set_alias(dataset=street, phrase="person", name="human")
    with pytest.raises(AliasRefused, match="already is"):
        set_alias(dataset=street, phrase="dogs", name="dog")
    with pytest.raises(AliasRefused, match="needed"):
        set_alias(dataset=street, phrase=" ", name="dog")
    assert vocabulary.aliases_of(street) == {"man": "person"}


def test_the_vocabulary_page_shows_counts_to_an_annotator_without_the_alias_form(client, street):
    client.force_login(UserFactory(roles=["annotator"]))
    response = client.get(reverse("catalog:vocabulary", args=[street.name]))
    page = response.content.decode()
    assert response.status_code == 200
    assert 'data-name="car"' in page and 'data-name="woman"' in page
    assert 'id="alias-form"' not in page


def test_a_curator_adds_and_removes_an_alias_and_the_page_counts_again(client, street):
    client.force_login(UserFactory(roles=["curator"]))
    url = reverse("catalog:aliases", args=[street.name])
    response = client.post(url, {"phrase": "woman", "name": "man"}, follow=True)
    page = response.content.decode()
    assert "Alias saved: woman → man." in page
    assert '<tr data-name="man">' in page and 'data-name="woman"' not in page
    assert '<td class="num" data-count="regions">5</td>' in page

    response = client.post(url, {"remove": "woman"}, follow=True)
    assert 'data-name="woman"' in response.content.decode()
    assert not VocabularyAlias.objects.filter(dataset=street).exists()


def test_a_refused_alias_says_why(client, street):
    client.force_login(UserFactory(roles=["curator"]))
    url = reverse("catalog:aliases", args=[street.name])
    response = client.post(url, {"phrase": "dog", "name": "dogs"}, follow=True)
    assert "Alias not added: &#x27;dog&#x27; already is that name" in response.content.decode()


def test_an_annotator_cannot_edit_aliases(client, street):
    client.force_login(UserFactory(roles=["annotator"]))
    response = client.post(
        reverse("catalog:aliases", args=[street.name]), {"phrase": "man", "name": "person"}
    )
    assert response.status_code == 403
    assert not VocabularyAlias.objects.exists()


def test_a_restricted_dataset_vocabulary_is_hidden_from_unlisted_annotators(client, street):
    street.restricted = True
    street.save()
    outsider, listed = UserFactory(roles=["annotator"]), UserFactory(roles=["annotator"])
    DatasetAccess.objects.create(dataset=street, user=listed)
    url = reverse("catalog:vocabulary", args=[street.name])
    client.force_login(outsider)
    assert client.get(url).status_code == 404
    client.force_login(listed)
    assert client.get(url).status_code == 200


def test_the_grid_loads_the_top_names_as_a_fragment(client, street):
    client.force_login(UserFactory(roles=["annotator"]))
    grid = client.get(reverse("catalog:image_grid", args=[street.name])).content.decode()
    top = reverse("catalog:vocabulary", args=[street.name]) + "?top=15"
    assert f'hx-get="{top}"' in grid
    fragment = client.get(
        reverse("catalog:vocabulary", args=[street.name]) + "?top=1", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "<html" not in fragment
    assert 'data-name="car"' in fragment and 'data-name="man"' not in fragment
    assert "All 3 names" in fragment
