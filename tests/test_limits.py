"""Limits: graphs of any depth, and images checked by size and header before they cost memory."""
from __future__ import annotations

import io
import struct
import sys
import tracemalloc
import zlib

import pytest
from conftest import ScriptedBackend
from PIL import Image

import localgrad as tg
from localgrad.engine import Engine
from localgrad.errors import InvalidInputError
from localgrad.execution import levels, topological_order
from localgrad.images import MAX_FILE_BYTES, MAX_PIXELS, MAX_SIDE, load_image


def test_a_chain_of_5000_llm_calls_runs_backward_without_recursion():
    engine = Engine(ScriptedBackend(lambda r: "step"))
    start = tg.Variable("draft", role_description="first draft")
    call = tg.LLMCall(engine, "Rewrite the text.")
    node = start
    for _ in range(5000):
        node = call(node)
    assert 5000 > sys.getrecursionlimit()
    order = topological_order([node])
    assert order[0] is call.system_prompt and order[1] is start and order[-1] is node and len(order) == 5002
    assert len(levels([node])) == 5001
    engine.backend.batches.clear()
    tg.TextLoss("Judge it.", engine=engine)(node).backward(engine)
    assert len(start.gradients) == 1
    assert [len(b) for b in engine.backend.batches[1:]] == [1] * 5001


def test_the_walk_order_is_the_depth_first_order():
    engine = Engine(ScriptedBackend())
    a, b = (tg.Variable(v, role_description=v) for v in "ab")
    ab = tg.FormattedLLMCall(engine, "{a}{b}", ["a", "b"])({"a": a, "b": b})
    ba = tg.FormattedLLMCall(engine, "{b}{a}", ["b", "a"])({"b": b, "a": a})
    total = tg.sum([ab, ba, a])
    assert topological_order([total]) == [a, b, ab, ba, total]
    assert levels([total]) == [[total], [ab, ba], [a, b]]


def _png_bomb(width: int, height: int) -> bytes:
    """A real 8-bit greyscale PNG of zeros: small on disk, width * height bytes once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, parts, row = zlib.compressobj(9), [], b"\x00" * (width + 1)
    rows_per_piece = max(1, 4_000_000 // len(row))
    for start in range(0, height, rows_per_piece):
        parts.append(compressor.compress(row * min(rows_per_piece, height - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def _peak_traced_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("width, height", [(1, 100_000_000), (14_000, 14_000)])
def test_a_small_file_that_decodes_to_a_huge_image_is_refused_from_its_header(tmp_path, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bomb(width, height))
    assert path.stat().st_size < 400_000 and width * height > MAX_PIXELS

    def refuse():
        with pytest.raises(InvalidInputError, match=f"{width}x{height} pixels, more than .* limit"):
            tg.Variable(image_path=path, requires_grad=False, role_description="picture")

    assert _peak_traced_bytes(refuse) < 2 * path.stat().st_size + 1_000_000


def test_a_2_gb_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as file:  # sparse: the 2 GB take no disk
        file.write(_png_bomb(8, 8))
        file.truncate(2 * 2**30)

    def refuse():
        with pytest.raises(InvalidInputError, match="2,147,483,648 bytes, more than"):
            load_image(path)

    assert _peak_traced_bytes(refuse) < 1_000_000


def test_bytes_over_the_size_limit_are_refused_before_decoding():
    with pytest.raises(InvalidInputError, match="bytes, more than"):
        load_image(_png_bomb(8, 8) + bytes(MAX_FILE_BYTES))


def test_non_images_and_special_files_are_refused_by_their_first_bytes(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(InvalidInputError, match="first bytes match none"):
        load_image(text)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        load_image("/dev/zero")


def test_an_image_at_the_limit_decodes_and_is_shrunk(tmp_path):
    path = tmp_path / "large.png"
    path.write_bytes(_png_bomb(8000, 5000))
    data, mime = load_image(path)
    assert mime == "image/png" and max(Image.open(io.BytesIO(data)).size) == MAX_SIDE


def test_large_jpegs_are_decoded_at_a_reduced_scale_and_shrunk():
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 4000), (10, 200, 30)).save(buffer, format="JPEG")
    data, mime = load_image(buffer.getvalue())
    assert mime == "image/png" and Image.open(io.BytesIO(data)).size == (MAX_SIDE, 1365)


def test_pillow_global_settings_are_left_alone():
    before = Image.MAX_IMAGE_PIXELS
    load_image(_png_bomb(16, 16))
    with pytest.raises(InvalidInputError):
        load_image(_png_bomb(1, 100_000_000))
    assert Image.MAX_IMAGE_PIXELS == before


@pytest.mark.parametrize("fmt, options", [
    ("PNG", {}), ("GIF", {}), ("BMP", {}), ("JPEG", {}), ("JPEG", {"progressive": True}),
    ("WEBP", {}), ("WEBP", {"lossless": True}), ("WEBP", {"mode": "RGBA"}),
])
def test_the_header_reader_agrees_with_pillow(fmt, options):
    from localgrad.images import header_size

    mode = options.pop("mode", "RGB")
    buffer = io.BytesIO()
    Image.new(mode, (1234, 567), (1, 2, 3, 4)[:len(mode)]).save(buffer, format=fmt, **options)
    assert header_size(buffer.getvalue()) == (1234, 567)
