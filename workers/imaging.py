"""Plain image handling shared by importers, the thumbnail task and the UI.

No Django here. Everything takes bytes and returns plain values, so it runs the same in a
management command, a Celery worker or a test.

Boxes are in the pixels of the *stored* image, so nothing here applies EXIF rotation: the
orientation tag is reported in the metadata, thumbnails keep the stored pixel layout, and the
UI shows images with ``image-orientation: none`` so overlays line up.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Formats we accept, with the file extension images are stored under.
EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
}
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own default limit


class ImageProblem(ValueError):
    """The bytes are not a usable image: unreadable, truncated, unsupported or a bomb."""


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    width: int
    height: int
    format: str

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def storage_path(self) -> str:
        """Content-addressed path, the same layout dataset versions use."""
        return f"images/{self.sha256[:2]}/{self.sha256}.{self.extension}"


def _open(data: bytes, max_pixels: int) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow warns between its limit and twice it; we apply our own limit below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageProblem(f"decompression bomb refused: {exc}") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageProblem(f"not a readable image: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageProblem(f"image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageProblem(
            f"decompression bomb refused: {width}x{height} = {width * height} pixels "
            f"exceeds the limit of {max_pixels}"
        )
    if image.format not in EXTENSIONS:
        raise ImageProblem(f"unsupported image format {image.format!r}")
    return image


def inspect_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Hash, size and fully decode ``data``; raise ``ImageProblem`` if it is not usable.

    The decode catches truncated and corrupt files that a header read alone would pass.
    JPEGs decode at 1/8 scale (libjpeg's DCT scaling), which still reads every byte.
    """
    if not data:
        raise ImageProblem("file is empty")
    image = _open(data, max_pixels)
    width, height = image.size
    fmt = str(image.format)
    try:
        if fmt == "JPEG":
            image.draft("RGB", (max(width // 8, 1), max(height // 8, 1)))
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageProblem(f"corrupt or truncated image: {exc}") from exc
    finally:
        image.close()
    return ImageInfo(hashlib.sha256(data).hexdigest(), width, height, fmt)


def probe_metadata(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Facts about an image worth keeping: format, mode, EXIF orientation, alpha, DPI, frames."""
    image = _open(data, max_pixels)
    with image:
        exif = image.getexif()
        meta: dict = {
            "format": image.format,
            "mode": image.mode,
            "orientation": int(exif.get(0x0112, 1)),
            "has_alpha": image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info,
            "frames": int(getattr(image, "n_frames", 1)),
            "icc_profile": "icc_profile" in image.info,
        }
        dpi = image.info.get("dpi")
        if dpi:
            meta["dpi"] = [round(float(v), 2) for v in dpi]
    return meta


def make_thumbnail(data: bytes, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """A JPEG no larger than ``size`` on its longer side, in the stored pixel layout."""
    image = _open(data, max_pixels)
    with image:
        if image.format == "JPEG":
            image.draft("RGB", (size, size))
        image.thumbnail((size, size))
        if image.mode not in ("RGB", "L"):
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue()
