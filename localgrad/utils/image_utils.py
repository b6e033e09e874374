"""textgrad's `textgrad.utils.image_utils`: URL checks. localgrad never downloads: images come from bytes or local files."""
from __future__ import annotations

from urllib.parse import urlparse

from localgrad.errors import InvalidInputError


def is_valid_url(url: str) -> bool:
    """True when `url` has a scheme and a host (http://..., https://...)."""
    parsed = urlparse(str(url))
    return bool(parsed.scheme and parsed.netloc)


def download_and_cache_image(image_url: str) -> bytes:
    """Refused on purpose: localgrad never downloads (offline by design, and a URL may change under a run).
    Download the image yourself and pass the bytes or the local path to Variable."""
    raise InvalidInputError(
        f"localgrad never downloads images (it runs offline, and a URL's content may change between runs); "
        f"save {image_url!r} to a local file and pass image_path=<that file>, or pass the image bytes."
    )
