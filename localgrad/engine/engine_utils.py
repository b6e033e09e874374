"""textgrad's `textgrad.engine.engine_utils`: image type checks on raw bytes."""
from __future__ import annotations

from localgrad.errors import UnsupportedRequestError

JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_jpeg(data: bytes) -> bool:
    """True when `data` starts like a JPEG file."""
    return data.startswith(JPEG_SIGNATURE)


def is_png(data: bytes) -> bool:
    """True when `data` starts like a PNG file."""
    return data.startswith(PNG_SIGNATURE)


def get_image_type_from_bytes(data: bytes) -> str:
    """"jpeg" or "png"; other formats raise (localgrad's own engines take GIF, WebP and BMP too)."""
    if is_jpeg(data):
        return "jpeg"
    if is_png(data):
        return "png"
    raise UnsupportedRequestError("Only JPEG and PNG image bytes are recognized here; convert the image to PNG.")
