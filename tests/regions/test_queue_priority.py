"""The stored queue (``QueueEntry``) stays equal to what the regions say, whoever writes them.

Every test compares the stored row with the value computed here from the regions themselves
(min |score - the run's box_threshold| over the pending regions, None when none has a
threshold), after one kind of writer: review services, undo and restore, bulk COPY from a run
or an import, ORM updates and raw SQL, and two annotators writing the same image at once.
"""

from __future__ import annotations

import io
import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from tests.catalog.factories import ImageFactory, RegionFactory, UserFactory
from tests.conftest import on_postgres
from tests.regions.conftest import detector_regions
from webapp.core.importing.bulk import insert_rows
from webapp.jobs.models import Run
from webapp.jobs.pseudo_label import REGION_COLUMNS
from webapp.regions import services
from webapp.regions.models import QueueEntry, Region
from webapp.regions.queue import QueueFilters, candidate_images, uses_stored_queue

pytestmark = pytest.mark.django_db


def expected(image) -> tuple[int, float | None]:
    """What the queue row must hold, computed in Python from the regions and their runs."""
    pending = list(Region.objects.filter(image=image, status="pending").select_related("run"))
    gaps = []
    for region in pending:
        run = region.run
        threshold = (run.parameters or {}).get("box_threshold") if run else None
        is_detector = run is not None and run.kind == Run.Kind.PSEUDO_LABEL
        if is_detector and isinstance(threshold, int | float) and region.score is not None:
            gaps.append(abs(region.score - threshold))
    return len(pending), (min(gaps) if gaps else None)


def stored(image) -> tuple[int, float | None]:
    entry = QueueEntry.objects.filter(image=image).first()
    return (entry.pending, entry.priority) if entry else (0, None)


def assert_in_step(*images) -> None:
    for image in images:
        want_pending, want_priority = expected(image)
        have_pending, have_priority = stored(image)
        assert have_pending == want_pending, (image.pk, have_pending, want_pending)
        if want_priority is None:
            assert have_priority is None, (image.pk, have_priority)
        else:
            assert have_priority == pytest.approx(want_priority), (image.pk, have_priority)


@pytest.fixture
def image(dataset, run):
    image = ImageFactory(dataset=dataset)
    detector_regions(image, run, [0.36, 0.5, 0.9])  # gaps 0.01, 0.15, 0.55
    return image


def by_score(image, score):
    return Region.objects.get(image=image, score=score)


def test_the_stored_queue_is_on_postgresql_and_only_without_region_filters():
    assert on_postgres()
    assert uses_stored_queue(QueueFilters()) and uses_stored_queue(QueueFilters(order="image"))
    for narrowing in ({"origin": "gt"}, {"min_score": 0.2}, {"phrase": "car"}, {"flagged": True}):
        assert not uses_stored_queue(QueueFilters(**narrowing))


def test_status_changes_move_the_priority_to_the_next_pending_region(image, annotator):
    assert stored(image) == (3, pytest.approx(0.01))
    nearest = by_score(image, 0.36)
    services.update_region(
        region_id=nearest.pk, expected_version=1, changes={"status": "accepted"}, user=annotator
    )
    assert stored(image) == (2, pytest.approx(0.15))
    assert_in_step(image)


def test_accept_all_empties_the_entry_and_the_image_leaves_the_queue(image, dataset, annotator):
    services.accept_remaining(image_id=image.pk, user=annotator)
    assert stored(image) == (0, None)
    got = candidate_images(dataset.pk, QueueFilters(), user_id=annotator.pk, now=timezone.now())
    assert image.pk not in got


def test_undo_and_restore_bring_the_priority_back(image, annotator):
    nearest = by_score(image, 0.36)
    accepted = services.update_region(
        region_id=nearest.pk, expected_version=1, changes={"status": "accepted"}, user=annotator
    )
    services.revert_change(change_id=accepted.last_change.pk, user=annotator, image=image)
    assert stored(image) == (3, pytest.approx(0.01))
    rejected = services.update_region(
        region_id=nearest.pk, expected_version=3, changes={"status": "rejected"}, user=annotator
    )
    assert stored(image)[0] == 2
    # Restore the state after the undo (pending again), as a new version.
    undo_change = nearest.changes.order_by("pk")[1]
    services.restore_version(
        change_id=undo_change.pk, expected_version=rejected.version, user=annotator
    )
    assert stored(image) == (3, pytest.approx(0.01))
    assert_in_step(image)


def test_human_regions_count_as_pending_without_a_priority(dataset, annotator):
    image = ImageFactory(dataset=dataset)
    drawn = services.create_region(image=image, box=[1, 2, 30, 40], phrase="sun", user=annotator)
    assert stored(image) == (1, None)
    services.delete_region(region_id=drawn.pk, expected_version=1, user=annotator)
    assert stored(image) == (0, None)
    assert_in_step(image)


def test_regions_written_by_a_run_with_copy_enter_the_queue(dataset, image):
    """The pseudo-label workers' and importers' bulk path: COPY, direct and through a temp table."""
    run = Run.objects.create(
        kind=Run.Kind.PSEUDO_LABEL, dataset=dataset, parameters={"box_threshold": 0.3}
    )
    fresh = ImageFactory(dataset=dataset)
    now = timezone.now()
    constants = {
        "caption": "", "origin": "detector", "status": "pending", "flagged": False,
        "flag_reason": "", "version": 1, "run_id": run.pk, "updated_by_id": None,
        "created_at": now, "updated_at": now,
    }  # fmt: skip
    insert_rows(
        Region,
        REGION_COLUMNS,
        [(fresh.pk, 640, 480, 1, 1, 50, 50, "dog", 0.7, "k1")],
        constants,
        fresh=True,
    )
    assert stored(fresh) == (1, pytest.approx(0.4))
    insert_rows(
        Region,
        REGION_COLUMNS,
        [
            (image.pk, 640, 480, 1, 1, 50, 50, "dog", 0.301, "k2"),
            (fresh.pk, 640, 480, 5, 5, 60, 60, "cat", 0.25, "k3"),
        ],
        constants,
    )
    assert stored(image) == (4, pytest.approx(0.001))
    assert stored(fresh) == (2, pytest.approx(0.05))
    assert_in_step(image, fresh)


def test_an_import_of_ground_truth_boxes_enters_the_queue_last(tmp_path, media_root, annotator):
    from tests.catalog.import_helpers import coco_instances, write_json
    from webapp.catalog.importing import import_coco

    folder = tmp_path / "val2017"
    folder.mkdir()
    path = write_json(tmp_path / "instances.json", coco_instances(folder))
    report = import_coco(dataset="coco", instances=path, images=folder)
    imported = Region.objects.filter(run_id=report.run_id)
    assert imported.count() == report.regions_new > 0
    for image_id in set(imported.values_list("image_id", flat=True)):
        pending = imported.filter(image_id=image_id).count()
        assert QueueEntry.objects.get(image_id=image_id).pending == pending
        assert QueueEntry.objects.get(image_id=image_id).priority is None


def test_orm_updates_and_raw_sql_keep_it_too(image, run):
    Region.objects.filter(image=image, score=0.36).update(score=0.9)
    assert stored(image) == (3, pytest.approx(0.15))
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM regions_region WHERE image_id = %s AND score = 0.5", [image.pk])
    assert stored(image) == (2, pytest.approx(0.55))
    # Caption and flag edits do not touch the queue row (no lock, no count).
    Region.objects.filter(image=image).update(caption="rewritten", flagged=True)
    assert_in_step(image)


def test_gt_regions_and_runs_without_a_threshold_have_no_priority(dataset):
    image = ImageFactory(dataset=dataset)
    RegionFactory(image=image, origin="gt", score=None)
    other = Run.objects.create(kind=Run.Kind.PSEUDO_LABEL, dataset=dataset, parameters={})
    RegionFactory(image=image, origin="detector", score=0.4, run=other)
    assert stored(image) == (2, None)
    assert_in_step(image)


@pytest.mark.django_db(transaction=True)
def test_two_annotators_writing_one_image_at_once_leave_it_right(postgres, dataset, run):
    """Each thread has its own connection and transaction; the last count must see both."""
    image = ImageFactory(dataset=dataset)
    regions = detector_regions(image, run, [0.36, 0.4, 0.5, 0.6, 0.7, 0.8])
    people = [UserFactory(username=f"p{n}", roles=["annotator"]) for n in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(person, mine):
        try:
            barrier.wait()
            for region in mine:
                services.update_region(
                    region_id=region.pk, expected_version=1, changes={"status": "accepted"},
                    user=person,
                )  # fmt: skip
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=work, args=(people[0], regions[0::2])),
        threading.Thread(target=work, args=(people[1], regions[1::2])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert stored(image) == (0, None)
    assert_in_step(image)


def test_the_command_recounts_a_queue_that_drifted(image, dataset, run):
    from django.core.management import call_command

    run.parameters = {"box_threshold": 0.5}  # edited after its regions were written
    run.save()
    assert stored(image) == (3, pytest.approx(0.01))
    out = io.StringIO()
    call_command("refresh_review_queue", dataset.name, stdout=out)
    assert "1/1 images recounted" in out.getvalue()
    assert stored(image) == (3, pytest.approx(0.0))
    assert_in_step(image)


@pytest.mark.django_db(transaction=True)
def test_a_run_writing_while_an_annotator_reviews_the_same_image_leaves_it_right(
    postgres, dataset, run
):
    """An insert adds to the row while a status change recounts it: neither loses the other."""
    image = ImageFactory(dataset=dataset)
    regions = detector_regions(image, run, [0.36 + n / 100 for n in range(8)])
    person = UserFactory(username="p", roles=["annotator"])
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    now = timezone.now()
    constants = {
        "caption": "", "origin": "detector", "status": "pending", "flagged": False,
        "flag_reason": "", "version": 1, "run_id": run.pk, "updated_by_id": None,
        "created_at": now, "updated_at": now,
    }  # fmt: skip

    def review():
        try:
            barrier.wait()
            for region in regions:
                services.update_region(
                    region_id=region.pk, expected_version=1, changes={"status": "accepted"},
                    user=person,
                )  # fmt: skip
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    def write_run():
        try:
            barrier.wait()
            for n in range(8):
                row = (image.pk, 640, 480, 1, 1, 50, 50, "dog", 0.9 - n / 100, f"k{n}")
                with transaction.atomic():  # as the workers write a batch
                    insert_rows(Region, REGION_COLUMNS, [row], constants)
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=review), threading.Thread(target=write_run)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert stored(image) == (8, pytest.approx(0.9 - 0.07 - 0.35))
    assert_in_step(image)
