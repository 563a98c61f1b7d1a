"""factory_boy factories for the API tests: datasets, images, regions and runs."""

import factory
from factory.django import DjangoModelFactory

from webapp.catalog.models import Dataset, Image
from webapp.jobs.models import Run
from webapp.regions.models import Region


class DatasetFactory(DjangoModelFactory):
    class Meta:
        model = Dataset

    name = factory.Sequence(lambda n: f"dataset-{n}")


class ImageFactory(DjangoModelFactory):
    class Meta:
        model = Image

    dataset = factory.SubFactory(DatasetFactory)
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    width = 640
    height = 480
    format = "PNG"
    file_name = factory.Sequence(lambda n: f"img-{n}.png")
    captions = factory.LazyFunction(lambda: ["a scene"])


class RegionFactory(DjangoModelFactory):
    class Meta:
        model = Region

    image = factory.SubFactory(ImageFactory)
    image_width = factory.SelfAttribute("image.width")
    image_height = factory.SelfAttribute("image.height")
    x0, y0, x1, y1 = 10.0, 20.0, 110.0, 220.0
    phrase = "dog"
    caption = "a brown dog"
    score = 0.75
    origin = Region.Origin.DETECTOR


class RunFactory(DjangoModelFactory):
    class Meta:
        model = Run

    kind = Run.Kind.PSEUDO_LABEL
    dataset = factory.SubFactory(DatasetFactory)
    model_id = "IDEA-Research/grounding-dino-tiny"
    total = 10
    done = 5
