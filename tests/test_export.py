"""`localgrad export-model DIR`: the embedded GGUF as a transformers directory that loads on its own, answers
like the GGUF does, and stops at the end of a turn."""
from __future__ import annotations

import json

import pytest

from localgrad.cli import main
from localgrad.engine import get_engine
from localgrad.errors import InvalidInputError
from localgrad.export import END_OF_TURN, export_embedded_model
from localgrad.request import Request, SamplingSettings


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "smollm2"
    assert main(["export-model", str(out)]) == 0
    return out


def test_the_directory_holds_a_whole_model(exported):
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert "chat_template.jinja" in names or "chat_template" in json.loads((exported / "tokenizer_config.json").read_text())
    config = json.loads((exported / "config.json").read_text())
    assert config["dtype"] == "float32" and config["architectures"] == ["LlamaForCausalLM"]
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")], "no staging directory is left behind"


def test_generation_stops_at_the_end_of_a_turn(exported):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(exported), local_files_only=True)
    generation = json.loads((exported / "generation_config.json").read_text())
    assert tokenizer.eos_token == END_OF_TURN
    assert generation["eos_token_id"] == tokenizer.convert_tokens_to_ids(END_OF_TURN)
    engine = get_engine(f"transformers:{exported}", max_tokens=200)
    completion = engine.generate_batch([Request.chat("Say hello in three words.")])[0]
    assert completion.finish_reason == "stop" and completion.completion_tokens < 200, completion


def test_it_answers_like_the_embedded_gguf(exported, embedded):
    requests = [Request.chat(q, sampling=SamplingSettings(max_tokens=24))
                for q in ("What is the capital of France?", "Name a primary colour.")]
    ours = get_engine(f"transformers:{exported}").generate_batch(requests)
    theirs = embedded.generate_batch(requests)
    assert [c.text for c in ours] == [c.text for c in theirs]


def test_refuses_a_non_empty_directory_or_a_file(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="not empty"):
        export_embedded_model(tmp_path)
    assert main(["export-model", str(tmp_path)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(InvalidInputError, match="is a file"):
        export_embedded_model(tmp_path / "keep.txt")
    assert (tmp_path / "keep.txt").read_text() == "mine"
