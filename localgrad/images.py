"""Image values: validated with Pillow within fixed limits, kept as encoded bytes, never downloaded.

A Variable may hold an image given as bytes, a `PIL.Image.Image`, or a local file path. It is
checked once on creation, cheapest checks first: the file's size (from the file system, before
reading), its first bytes (one of the supported formats), and its width and height (read from the
header by localgrad, before Pillow parses or decodes anything). Only then is it decoded, so a huge file or a small file that decodes to
a huge picture is refused without the memory it would cost. Images wider or taller than
`MAX_SIDE` are shrunk. Pillow's process-wide settings (`Image.MAX_IMAGE_PIXELS`) are left alone.
"""
from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path
from typing import Any

from localgrad.errors import InvalidInputError

SUPPORTED_FORMATS = {
    "PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp",
}
MAX_SIDE = 2048
MAX_FILE_BYTES = 64 * 2**20
# Decoding takes up to 4 bytes a pixel plus working copies: a 40-megapixel RGBA PNG peaks at about 210 MB.
MAX_PIXELS = 40_000_000
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
_HELP = "Pass PNG, JPEG, GIF, WEBP or BMP bytes, a PIL image, or a path to such a file."


def is_url(value: str) -> bool:
    """True for http(s) and similar URLs, which localgrad refuses to fetch."""
    return value.strip().lower().startswith(("http://", "https://", "ftp://", "s3://", "gs://"))


def _check_header(head: bytes, source: str) -> None:
    is_webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    if not (is_webp or head.startswith(_SIGNATURES)):
        raise InvalidInputError(
            f"{source} is not a readable image: its first bytes match none of the supported formats "
            f"(supported formats are PNG, JPEG, GIF, WEBP, BMP). {_HELP}"
        )


def _check_size(size: int, source: str) -> None:
    if size > MAX_FILE_BYTES:
        raise InvalidInputError(
            f"The image {source} is {size:,} bytes, more than localgrad's limit of {MAX_FILE_BYTES:,}. "
            "Downscale or recompress it first."
        )


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from an image's header bytes (PNG, GIF, BMP, WEBP, JPEG), or None when not found there."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24]) if len(data) >= 24 else None
    if data.startswith((b"GIF87a", b"GIF89a")) and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data.startswith(b"BM") and len(data) >= 26:
        if struct.unpack("<I", data[14:18])[0] == 12:
            return struct.unpack("<HH", data[18:22])
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if kind == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if kind == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        return None
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The frame size from a JPEG's first start-of-frame marker."""
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:
            at += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    return None


def _check_pixels(width: int, height: int, source: str) -> None:
    if width * height > MAX_PIXELS:
        raise InvalidInputError(
            f"The image {source} is {width}x{height} pixels, more than localgrad's limit of {MAX_PIXELS:,} pixels "
            "(decoding it would take too much memory). Downscale it first (e.g. PIL's Image.thumbnail)."
        )


def _read_file(path: Path) -> bytes:
    """The bytes of an image file, after checking it is a regular file of an allowed size with an image header."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InvalidInputError(f"Cannot open the image file {path} ({exc.strerror or exc}). Pass an existing local path.") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(f"{path} is not a regular file. Pass the path of an image file.")
        _check_size(info.st_size, str(path))
        with os.fdopen(fd, "rb", closefd=False) as file:
            head = file.read(16)
            _check_header(head, str(path))
            data = head + file.read(min(info.st_size, MAX_FILE_BYTES) + 1 - len(head))
    except OSError as exc:
        raise InvalidInputError(f"Cannot read the image file {path} ({exc.strerror or exc}).") from exc
    finally:
        os.close(fd)
    _check_size(len(data), str(path))
    return data


def _open(data: bytes, source: str) -> tuple[Any, tuple[int, int]]:
    """The decoded image (JPEGs decoded at a reduced scale when large) and its full size from the header."""
    from PIL import Image

    _check_size(len(data), source)
    _check_header(data[:16], source)
    declared = header_size(data)
    if declared is not None:
        _check_pixels(*declared, source)
    try:
        image = Image.open(io.BytesIO(data), formats=list(SUPPORTED_FORMATS))
        size = image.size
        _check_pixels(*size, source)
        image.draft(None, (MAX_SIDE, MAX_SIDE))
        image.load()
    except InvalidInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidInputError(f"The image {source} is too large to decode safely ({exc}). Downscale it first.") from exc
    except Exception as exc:
        raise InvalidInputError(f"{source} is not a readable image ({type(exc).__name__}: {exc}). {_HELP}") from exc
    return image, size


def _encode(image: Any) -> bytes:
    buffer = io.BytesIO()
    mode = image.mode if image.mode in ("RGB", "RGBA", "L") else "RGB"
    image.convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _shrunk(image: Any) -> Any:
    from PIL import ImageOps

    return ImageOps.contain(image, (MAX_SIDE, MAX_SIDE))


def load_image(value: Any) -> tuple[bytes, str]:
    """Validate an image given as bytes, a PIL image or a local path; return (encoded bytes, MIME type)."""
    from PIL import Image

    if isinstance(value, Image.Image):
        _check_pixels(value.width, value.height, "given as a PIL image")
        return _encode(_shrunk(value) if max(value.size) > MAX_SIDE else value), "image/png"
    if isinstance(value, (bytes, bytearray)):
        data, source = bytes(value), "given as bytes"
    elif isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if not isinstance(text, str):
            raise InvalidInputError(f"An image path must be text, got {text!r:.80}.")
        if is_url(text):
            raise InvalidInputError(
                f"{text!r} is a URL. localgrad never downloads images (it runs offline, and what a URL serves can "
                "change between runs); save the file locally and pass its path."
            )
        path = Path(text)
        if not path.exists():
            raise InvalidInputError(f"Image file not found: {path}. Pass an existing local path.")
        data, source = _read_file(path), str(path)
    else:
        raise InvalidInputError(
            f"An image must be bytes, a PIL.Image.Image or a local path, got {type(value).__name__}."
        )
    image, size = _open(data, source)
    if image.format not in SUPPORTED_FORMATS:
        raise InvalidInputError(
            f"The image {source} has format {image.format}; supported formats are {', '.join(SUPPORTED_FORMATS)}."
        )
    if max(size) > MAX_SIDE:
        return _encode(_shrunk(image)), "image/png"
    return data, SUPPORTED_FORMATS[image.format]


def image_mime_type(data: bytes) -> str:
    """The MIME type of encoded image bytes (validating them)."""
    return load_image(data)[1]
