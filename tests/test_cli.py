"""The command line: engine options on every command, honest help, clear errors."""
from __future__ import annotations

import importlib.util

import pytest

import localgrad as tg
from localgrad.cli import build_parser, engine_option, engine_options, main


@pytest.mark.parametrize("text, expected", [
    ("n_threads=1", ("n_threads", 1)),
    ("temperature=0.5", ("temperature", 0.5)),
    ("deterministic=false", ("deterministic", False)),
    ("share_prefix=False", ("share_prefix", False)),
    ("device=cuda:1", ("device", "cuda:1")),
    ("dtype=bfloat16", ("dtype", "bfloat16")),
    ('base_urls=["http://a:8000/v1", "http://b:8000/v1"]', ("base_urls", ["http://a:8000/v1", "http://b:8000/v1"])),
    ("seed=null", ("seed", None)),
    ("api_key=a=b", ("api_key", "a=b")),
])
def test_engine_option_values_are_read_as_json_else_text(text, expected):
    assert engine_option(text) == expected


@pytest.mark.parametrize("command", ["demo", "optimize"])
def test_every_command_takes_repeated_engine_options(command):
    args = build_parser().parse_args([command, "--engine-option", "n_threads=1", "--engine-option", "n_ctx=2048"])
    assert engine_options(args.engine_option) == {"n_threads": 1, "n_ctx": 2048}


@pytest.mark.parametrize("argv", [["demo", "--engine-option", "n_threads"], ["optimize", "--engine-option", "=1"],
                                  ["demo", "--engine-option", "not a name=1"]])
def test_malformed_engine_options_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["demo", "--engine-option", "n_threads=1", "--engine-option", "n_threads=2"], "given twice"),
    (["demo", "--engine-option", "max_tokens=5"], "--max-tokens"),
    (["optimize", "--backward-engine-option", "n_threads=1"], "needs --backward-engine"),
    (["demo", "--engine", "embedded:llamacpp", "--engine-option", "n_threads=0"], "n_threads must be an int in"),
    (["demo", "--engine", "embedded:llamacpp", "--engine-option", "threads=1"], "Unknown llamacpp option"),
])
def test_bad_engine_options_are_localgrad_errors(argv, message, capsys, tmp_path, monkeypatch):
    if "llamacpp" in " ".join(argv) and importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_optimize_help_says_what_the_run_writes(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["optimize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("checkpoint.json", "records.json", "plot.png", "report.html", "--resume"):
        assert name in text
    assert "--engine-option KEY=VALUE" in text and "n_threads=1" in text


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_demo_runs_on_llamacpp_with_the_thread_count_given(capsys):
    assert main(["demo", "--engine", "embedded:llamacpp", "--max-tokens", "24", "--engine-option", "n_threads=1"]) == 0
    out = capsys.readouterr().out
    assert "=== improved answer ===" in out
    engine = tg.get_engine("embedded:llamacpp", max_tokens=24, n_threads=1)
    assert engine.backend.options.n_threads == 1 and engine.usage.batches >= 4
