"""factory_boy factories for catalog rows, and real image bytes in default storage."""

from __future__ import annotations

import hashlib
import io
import itertools

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from webapp.catalog.models import Dataset, Image, QuestionItem
from webapp.regions.models import Region


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        if create and extracted:
            # get_or_create: transactional tests flush the groups the data migration made.
            self.groups.add(*(Group.objects.get_or_create(name=name)[0] for name in extracted))
        if create:
            self.save()


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset

    name = factory.Sequence(lambda n: f"dataset-{n}")


class ImageFactory(factory.django.DjangoModelFactory):
    """An image row without stored bytes (reference mode); see ``stored_image`` for bytes."""

    class Meta:
        model = Image

    dataset = factory.SubFactory(DatasetFactory)
    sha256 = factory.Sequence(lambda n: hashlib.sha256(f"image-{n}".encode()).hexdigest())
    width = 640
    height = 480
    format = "PNG"
    file_name = factory.Sequence(lambda n: f"img_{n:05d}.png")
    captions = factory.LazyFunction(lambda: ["a test scene"])
    source = "test"


class RegionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Region

    image = factory.SubFactory(ImageFactory)
    image_width = factory.SelfAttribute("image.width")
    image_height = factory.SelfAttribute("image.height")
    x0 = 10.0
    y0 = 20.0
    x1 = 100.0
    y1 = 80.0
    phrase = "red car"
    caption = "a red car on the road"
    origin = Region.Origin.GT
    status = Region.Status.PENDING


class QuestionItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = QuestionItem

    image = factory.SubFactory(ImageFactory)
    question = "What is left of the house?"
    reference = "A red car."
    source_key = factory.Sequence(lambda n: f"q{n}")


_unique = itertools.count()


def stored_image(dataset: Dataset | None = None, *, width: int = 64, height: int = 48, **kw):
    """An Image whose PNG bytes are saved in ``default_storage``, as an importer leaves it.

    Every call makes different bytes (a PNG text chunk carries a counter), so sha256 differs.
    """
    info = PngInfo()
    info.add_text("n", str(next(_unique)))
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (40, 120, 200)).save(out, "PNG", pnginfo=info)
    data = out.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    path = f"images/{sha[:2]}/{sha}.png"
    default_storage.save(path, ContentFile(data))
    return ImageFactory(
        dataset=dataset or DatasetFactory(),
        sha256=sha,
        width=width,
        height=height,
        format="PNG",
        storage_path=path,
        **kw,
    )
