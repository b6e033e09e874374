"""Images through the graph and a real vision-language model.

The VLM is tiny and random (`tiny_vlm.py`) but loaded exactly as a user's directory is, so these
tests check the real path: pixels reach the vision tower, a batch of image requests is one
`generate` call, constraints hold, and forward/backward/step over an image question updates text.
Bad image inputs are refused with `InvalidInputError`.
"""
from __future__ import annotations

import importlib.util
import io
import json
import time

import pytest
import torch
from conftest import ScriptedBackend
from PIL import Image
from tiny_vlm import FAMILIES, build_tiny_vlm, embedded_tokenizer, vision_tower

import localgrad as tg
from localgrad.backends.constraints import parse_tagged, tagged
from localgrad.engine import Engine
from localgrad.errors import (
    BackendOutOfMemoryError,
    EngineConfigError,
    InvalidInputError,
    UnsupportedRequestError,
)
from localgrad.prompts import backward as backward_prompts
from localgrad.request import ImageContent, Request, SamplingSettings

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}


def png(colour: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    """A small single-colour PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


class ImageScriptedBackend(ScriptedBackend):
    """The scripted stand-in model, declared able to see images."""

    supports_images = True


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded SmolLM2 tokenizer, read once for every tiny VLM."""
    return embedded_tokenizer()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a shared 2-core machine spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def vlm_dirs(tmp_path_factory, tokenizer):
    """Builds (once) and returns the directory of a tiny VLM per family."""
    built = {}

    def directory(family: str):
        if family not in built:
            built[family] = build_tiny_vlm(tmp_path_factory.mktemp(f"tiny-{family}"), family, tokenizer)
        return built[family]

    return directory


@pytest.fixture(scope="session")
def vlm(vlm_dirs):
    """The tiny Idefics3 (SmolVLM) model as an engine, loaded by name like any local model directory."""
    return tg.get_engine("transformers-vlm:" + str(vlm_dirs("idefics3")), max_tokens=6)


class Recorder:
    """Counts `generate` calls and records the pixel batches the vision tower actually ran on."""

    def __init__(self, backend):
        self.model = backend.model
        self.generate_calls = 0
        self.pixel_batches: list = []
        self._generate = self.model.generate
        self.model.generate = self._counting_generate
        self._hook = vision_tower(self.model).register_forward_hook(self._record, with_kwargs=True)

    def _counting_generate(self, *args, **kwargs):
        self.generate_calls += 1
        return self._generate(*args, **kwargs)

    def _record(self, module, args, kwargs, output):
        pixels = args[0] if args else next(v for k, v in kwargs.items() if k in ("pixel_values", "hidden_states"))
        self.pixel_batches.append(pixels.detach().clone())

    def close(self):
        self._hook.remove()
        del self.model.generate


@pytest.fixture
def recorder(vlm):
    """A Recorder on the tiny Idefics3 engine's model, removed after the test."""
    rec = Recorder(vlm.backend)
    yield rec
    rec.close()


def _family(family: str) -> str:
    if family == "qwen2_vl" and importlib.util.find_spec("torchvision") is None:
        pytest.skip("Qwen2-VL's processor needs torchvision, which is not installed")
    return family


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_sees_the_pixels_of_a_mixed_batch_in_one_generate_call(family, vlm_dirs):
    engine = tg.get_engine("transformers-vlm:" + str(vlm_dirs(_family(family))), max_tokens=4)
    assert engine.backend.supports_images and engine.backend.supports_constraints
    images = [png(c) for c in COLOURS.values()]
    requests = [Request.chat([ImageContent(i), "Which colour is this?"], sampling=engine.sampling) for i in images]
    requests.append(Request.chat("A text-only question in the same batch.", sampling=engine.sampling))
    rec = Recorder(engine.backend)
    try:
        completions = engine.generate_batch(requests)
    finally:
        rec.close()
    assert len(completions) == 4 and all(c.completion_tokens >= 1 for c in completions)
    assert rec.generate_calls == 1
    assert len(rec.pixel_batches) == 1, "the vision tower runs once, at prefill, on the whole batch"
    pictures = [Image.open(io.BytesIO(i)).convert("RGB") for i in images]
    expected = engine.backend.processor.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
    seen = rec.pixel_batches[0]
    assert expected.numel() == seen.numel(), "the vision tower ran on the three images, no more"
    assert torch.allclose(expected.reshape(seen.shape), seen), "and on exactly their pixels"


def test_a_processor_without_chat_template_gets_plain_prompts_with_image_placeholders(vlm_dirs, monkeypatch):
    engine = tg.get_engine("transformers-vlm:" + str(vlm_dirs("llava")), max_tokens=4)
    monkeypatch.setattr(engine.backend.processor, "chat_template", None)
    request = Request.chat([ImageContent(png(COLOURS["red"])), "What is it?"], system="Be brief.", sampling=engine.sampling)
    assert engine.backend.prompt_text(request) == "system: Be brief.\nuser: <image>What is it?\nassistant: "
    assert engine.generate_batch([request])[0].completion_tokens >= 1


def test_batch_of_three_image_requests_is_one_generate_call_and_matches_one_by_one(vlm, recorder):
    sampling = SamplingSettings(max_tokens=6)
    requests = [
        Request.chat([ImageContent(png(c)), "Describe the image."], sampling=sampling) for c in COLOURS.values()
    ]
    started = time.perf_counter()
    batched = vlm.backend.generate_batch(requests)
    batch_s = time.perf_counter() - started
    assert recorder.generate_calls == 1
    assert recorder.pixel_batches[0].shape[0] == 3
    started = time.perf_counter()
    single = [vlm.backend.generate(r) for r in requests]
    single_s = time.perf_counter() - started
    assert recorder.generate_calls == 4
    assert [c.text for c in batched] == [c.text for c in single], "greedy batching changes no output"
    print(f"\ntiny VLM, 3 image requests x 6 tokens: batch {batch_s:.3f} s, one by one {single_s:.3f} s "
          f"({single_s / batch_s:.2f}x)")


def test_a_constrained_image_request_is_honoured_beside_a_free_one(vlm, recorder):
    constraint = tagged("<ANSWER>", "</ANSWER>")
    constrained = Request.chat(
        [ImageContent(png(COLOURS["red"])), "Which colour? Answer in tags."],
        sampling=SamplingSettings(max_tokens=20), constraint=constraint,
    )
    free = Request.chat([ImageContent(png(COLOURS["blue"])), "Say anything."], sampling=SamplingSettings(max_tokens=5))
    tagged_out, free_out = vlm.generate_batch([constrained, free])
    assert recorder.generate_calls == 1
    assert parse_tagged(tagged_out.text, "<ANSWER>", "</ANSWER>") is not None, tagged_out.text
    assert tagged_out.text.startswith("<ANSWER>") and tagged_out.text.endswith("</ANSWER>")
    assert free_out.completion_tokens <= 5


def test_forward_backward_step_on_an_image_question_updates_the_answer(vlm, recorder):
    image = tg.Variable(png(COLOURS["green"]), requires_grad=False, role_description="a picture of one colour")
    question = tg.Variable("What colour is it?", requires_grad=False, role_description="question about the picture")
    answer = tg.MultimodalLLMCall(vlm)([image, question], response_role_description="answer to the question")
    before = answer.value
    loss = tg.ImageQALoss("Is the answer right? Be brief.", engine=vlm)(image, question, answer)
    sent: list[Request] = []
    generate_batch = vlm.backend.generate_batch
    vlm.backend.generate_batch = lambda requests: sent.extend(requests) or generate_batch(requests)
    try:
        loss.backward(vlm)
        optimizer = tg.TGD([answer], engine=vlm, max_tokens=40)
        optimizer.step()
    finally:
        del vlm.backend.generate_batch
    feedback = [r for r in sent if r.messages[0].text == backward_prompts.BACKWARD_SYSTEM_PROMPT]
    assert feedback and all(r.has_images for r in feedback), "the backward engine sees the image too"
    assert answer.gradients and answer.value != before
    assert recorder.generate_calls == 4, "forward, loss, feedback to the answer, step"
    assert len(recorder.pixel_batches) == 3, "every call but the optimizer's carries the image"


def test_out_of_memory_during_generate_is_a_backend_out_of_memory_error(vlm, monkeypatch):
    def out_of_memory(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(vlm.backend.model, "generate", out_of_memory)
    with pytest.raises(BackendOutOfMemoryError, match="lower max_batch_size or max_tokens"):
        vlm.generate_batch([Request.chat([ImageContent(png(COLOURS["red"])), "?"], sampling=vlm.sampling)])


def test_text_only_engines_refuse_images():
    engine = Engine(ScriptedBackend())
    image = tg.Variable(png(COLOURS["red"]), requires_grad=False, role_description="a picture")
    with pytest.raises(UnsupportedRequestError, match="text-only.*transformers-vlm"):
        engine.generate_batch([Request.chat([ImageContent(image.value), "What is it?"])])
    with pytest.raises(UnsupportedRequestError, match="text-only.*transformers-vlm"):
        tg.MultimodalLLMCall(engine)
    with pytest.raises(UnsupportedRequestError, match="text-only"):
        tg.LLMCall(engine)(image)


def test_vlm_engine_names_that_cannot_load_are_config_errors(tmp_path):
    with pytest.raises(EngineConfigError, match="Model path not found"):
        tg.get_engine("transformers-vlm:" + str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 10}))
    with pytest.raises(EngineConfigError, match="'llama' model, which is not a vision-language.*'transformers:"):
        tg.get_engine("transformers-vlm:" + str(tmp_path))
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(EngineConfigError, match="not a GGUF file"):
        tg.get_engine("transformers-vlm:" + str(tmp_path / "model.gguf"))


def test_ordered_fields_render_labels_and_images_in_order_and_batch_in_one_call():
    backend = ImageScriptedBackend()
    call = tg.OrderedFieldsMultimodalLLMCall(Engine(backend), ["Question", "Image", "Answer"], system_prompt="Judge.")
    images = [tg.Variable(png(c), requires_grad=False, role_description="picture") for c in COLOURS.values()]
    question = tg.Variable("Which colour?", requires_grad=False, role_description="question")
    answers = [tg.Variable(name, role_description="answer") for name in COLOURS]
    outputs = call([{"Question": question, "Image": i, "Answer": a} for i, a in zip(images, answers)])
    assert len(outputs) == 3 and len(backend.batches) == 1
    content = backend.batches[0][0].messages[-1].content
    assert content == ("Question: Which colour?", ImageContent(images[0].value, "image/png"), "Answer: red")
    with pytest.raises(InvalidInputError, match="exactly the fields"):
        call({"Question": question, "Answer": answers[0]})


def test_multimodal_call_backward_carries_the_image_to_the_feedback_request():
    backend = ImageScriptedBackend()
    engine = Engine(backend)
    image = tg.Variable(png(COLOURS["blue"]), requires_grad=False, role_description="picture")
    prompt = tg.Variable("Name the colour.", role_description="instruction to the model")
    extra = tg.Variable("One word.", requires_grad=False, role_description="format rule")
    response = tg.MultimodalLLMCall(engine)([image, prompt, extra])
    assert backend.batches[0][0].messages[-1].content == (ImageContent(image.value), "Name the colour.\nOne word.")
    response.backward(engine)
    feedback_request = backend.batches[-1][0]
    assert feedback_request.messages[-1].images == (ImageContent(image.value),)
    assert prompt.gradients and not image.gradients
    with pytest.raises(InvalidInputError, match="list of Variables"):
        tg.MultimodalLLMCall(engine)(image)


def test_image_qa_loss_evaluates_and_steps_on_a_scripted_engine():
    engine = Engine(ImageScriptedBackend())
    image = tg.Variable(png(COLOURS["red"]), requires_grad=False, role_description="picture")
    answer = tg.Variable("blue", role_description="answer to the question")
    loss = tg.ImageQALoss("Is the answer right?", engine=engine)(image, "What colour is it?", answer)
    assert loss.role_description == "evaluation of the answer to the question"
    loss.backward(engine)
    tg.TGD([answer], engine=engine).step()
    assert answer.value == "improved: blue"
    with pytest.raises(InvalidInputError, match="image Variable"):
        tg.ImageQALoss("x", engine=engine)(answer, "q", answer)


# -- bad image inputs ---------------------------------------------------------------------------


def _image_variable(**kwargs) -> tg.Variable:
    return tg.Variable(requires_grad=False, role_description="picture", **kwargs)


def test_truncated_jpeg_is_refused():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    with pytest.raises(InvalidInputError, match="not a readable image"):
        _image_variable(value=data[: len(data) // 2])


def test_a_text_file_passed_as_image_path_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image at all")
    with pytest.raises(InvalidInputError, match="not a readable image"):
        _image_variable(image_path=path)
    with pytest.raises(InvalidInputError, match="not found"):
        _image_variable(image_path=tmp_path / "missing.png")


def test_a_20000_pixel_square_image_is_refused_without_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 20000), 1).save(path)
    assert path.stat().st_size < 1_000_000
    started = time.perf_counter()
    with pytest.raises(InvalidInputError, match="too large|Downscale"):
        _image_variable(image_path=path)
    assert time.perf_counter() - started < 2.0


def test_a_large_image_within_the_limit_is_shrunk():
    variable = _image_variable(value=png((1, 2, 3), size=(3000, 200)))
    assert Image.open(io.BytesIO(variable.value)).size[0] <= 2048 and variable.mime_type == "image/png"


def test_urls_are_refused_not_downloaded():
    with pytest.raises(InvalidInputError, match="URL.*never downloads"):
        _image_variable(image_path="https://example.com/cat.png")


def test_an_image_cannot_require_grad():
    with pytest.raises(InvalidInputError, match="Images cannot be optimized"):
        tg.Variable(png((1, 2, 3)), requires_grad=True, role_description="picture")


@pytest.mark.parametrize("fmt", ["TIFF", "ICO"])
def test_unsupported_formats_are_refused(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (5, 5, 5)).save(buffer, format=fmt)
    with pytest.raises(InvalidInputError, match=f"format {fmt}; supported formats are PNG"):
        _image_variable(value=buffer.getvalue())
