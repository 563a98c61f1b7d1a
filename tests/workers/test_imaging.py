import io

import pytest
from PIL import Image

from workers.imaging import ImageProblem, inspect_image, make_thumbnail, probe_metadata


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def test_it_reports_hash_size_and_format_of_a_good_image():
    data = encode(Image.new("RGB", (64, 48), "red"), "JPEG")
    info = inspect_image(data)
    assert (info.width, info.height, info.format) == (64, 48, "JPEG")
    assert info.storage_path == f"images/{info.sha256[:2]}/{info.sha256}.jpg"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_truncated_image_is_refused(fmt):
    noisy = Image.effect_noise((256, 256), 64).convert("RGB")
    data = encode(noisy, fmt)
    with pytest.raises(ImageProblem, match=r"truncated|corrupt"):
        inspect_image(data[: len(data) // 2])


def test_garbage_bytes_are_refused():
    with pytest.raises(ImageProblem, match="not a readable image"):
        inspect_image(b"definitely not an image")


def test_a_decompression_bomb_is_refused_before_decoding():
    data = encode(Image.new("1", (4000, 4000)))
    with pytest.raises(ImageProblem, match="decompression bomb"):
        inspect_image(data, max_pixels=1_000_000)


def test_a_thumbnail_keeps_the_aspect_and_fits_the_size():
    data = encode(Image.new("RGBA", (400, 200), (0, 0, 255, 128)))
    thumb = Image.open(io.BytesIO(make_thumbnail(data, 100)))
    assert thumb.format == "JPEG"
    assert thumb.size == (100, 50)


def test_probe_reads_the_exif_orientation():
    image = Image.new("RGB", (30, 20))
    exif = image.getexif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    meta = probe_metadata(out.getvalue())
    assert meta["orientation"] == 6
    assert meta["format"] == "JPEG"
