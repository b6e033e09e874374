"""Image values: validated with Pillow, kept as encoded bytes, never downloaded.

A Variable may hold an image given as bytes, a `PIL.Image.Image`, or a local file path. It is
checked once on creation (a broken file, a non-image or an unsupported format is a clear error),
and images wider or taller than `MAX_SIDE` are shrunk so a huge picture cannot exhaust memory.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from localgrad.errors import InvalidInputError

SUPPORTED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}
MAX_SIDE = 2048
MAX_PIXELS = 120_000_000


def is_url(value: str) -> bool:
    """True for http(s) and similar URLs, which localgrad refuses to fetch."""
    return value.strip().lower().startswith(("http://", "https://", "ftp://", "s3://", "gs://"))


def _open(data: bytes, source: str):
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise InvalidInputError(
                f"The image {source} is {image.width}x{image.height} pixels, more than localgrad's limit of "
                f"{MAX_PIXELS:,} pixels. Downscale it first (e.g. PIL's Image.thumbnail)."
            )
        image.load()
    except InvalidInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidInputError(
            f"The image {source} is too large to decode safely ({exc}). Downscale it first."
        ) from exc
    except Exception as exc:
        raise InvalidInputError(
            f"{source} is not a readable image ({type(exc).__name__}: {exc}). "
            f"Pass PNG, JPEG, GIF, WEBP or BMP bytes, a PIL image, or a path to such a file."
        ) from exc
    if image.format not in SUPPORTED_FORMATS:
        raise InvalidInputError(
            f"The image {source} has format {image.format}; supported formats are {', '.join(SUPPORTED_FORMATS)}."
        )
    return image


def _encode(image: Any) -> bytes:
    buffer = io.BytesIO()
    mode = image.mode if image.mode in ("RGB", "RGBA", "L") else "RGB"
    image.convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def load_image(value: Any) -> tuple[bytes, str]:
    """Validate an image given as bytes, a PIL image or a local path; return (encoded bytes, MIME type)."""
    from PIL import Image

    if isinstance(value, Image.Image):
        image, data, source = value, None, "given as a PIL image"
    elif isinstance(value, (bytes, bytearray)):
        data, source = bytes(value), "given as bytes"
        image = _open(data, source)
    elif isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if is_url(text):
            raise InvalidInputError(
                f"{text!r} is a URL. localgrad never downloads images (it runs offline, and what a URL serves can "
                "change between runs); save the file locally and pass its path."
            )
        path = Path(text)
        if not path.is_file():
            raise InvalidInputError(f"Image file not found: {path}. Pass an existing local path.")
        data, source = path.read_bytes(), str(path)
        image = _open(data, source)
    else:
        raise InvalidInputError(
            f"An image must be bytes, a PIL.Image.Image or a local path, got {type(value).__name__}."
        )
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE))
        return _encode(image), "image/png"
    if data is None:
        return _encode(image), "image/png"
    return data, SUPPORTED_FORMATS[image.format]


def image_mime_type(data: bytes) -> str:
    """The MIME type of encoded image bytes (validating them)."""
    return load_image(data)[1]
