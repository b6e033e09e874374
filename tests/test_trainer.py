"""The Trainer: records, checkpoints, revert, resume after a kill (scripted backend), and a real run + CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trainer_script import make_trainer

import localgrad as tg
from localgrad.errors import CheckpointError, InvalidInputError
from localgrad.train.tasks import make_object_counting, split
from localgrad.train.trainer import PHASES, Trainer, TrainerConfig

HERE = Path(__file__).parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMING_KEYS = ("seconds", "backend_seconds", "wall_seconds")


def without_timings(value):
    """The value with every wall-clock field removed (they differ between runs)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def run_script(out_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, str(HERE / "trainer_script.py"), str(out_dir), *args],
        check=False, capture_output=True, text=True, env=env, timeout=120,
    )


def test_config_is_validated():
    with pytest.raises(InvalidInputError, match="batch_size"):
        TrainerConfig(batch_size=0)
    with pytest.raises(InvalidInputError, match="steps= or epochs="):
        TrainerConfig(steps=None, epochs=None)
    with pytest.raises(InvalidInputError, match="eval_batch_size"):
        TrainerConfig(eval_batch_size=-1)
    assert TrainerConfig(steps=None, epochs=2, batch_size=4).total_steps(10) == 6


def test_scripted_run_writes_records_checkpoint_and_plot(tmp_path):
    trainer = make_trainer(str(tmp_path), steps=4)
    state = trainer.fit()
    records = state["records"]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    previous = state["initial"]
    for r in records:
        assert set(r["seconds"]) == {*PHASES, "total"}
        assert r["batches"] == {"forward": 1, "loss": 0, "backward": 2, "step": 1, "eval": 1 if r["reverted"] else 2}
        assert r["tokens"]["prompt"] > 0 and r["tokens"]["completion"] > 0
        if r["reverted"]:
            assert r["prompt"] == previous["prompt"] != r["proposed_prompt"]
            assert r["val_score"] == previous["val_score"]
        else:
            assert r["prompt"] == r["proposed_prompt"]
            assert r["val_score"] >= previous["val_score"]
        previous = r
    assert any(r["reverted"] for r in records) and not all(r["reverted"] for r in records)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["records"] == records and saved["prompt"] == trainer.system_prompt.value
    assert saved["optimizer"]["steps"] == 4
    assert saved["position"]["steps_done"] == 4
    assert saved["totals"]["batches"] == state["initial"]["usage"]["batches"] + sum(r["usage"]["batches"] for r in records)
    assert json.loads((tmp_path / "records.json").read_text())["records"] == records
    assert (tmp_path / "plot.png").read_bytes()[:8] == PNG_MAGIC
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_resume_after_kill_continues_at_next_step(tmp_path):
    reference = make_trainer(str(tmp_path / "reference"), steps=5).fit()
    run = tmp_path / "run"
    crashed = run_script(run, "--steps", "5", "--exit-after", "2")
    assert crashed.returncode == 3, crashed.stderr
    saved = json.loads((run / "checkpoint.json").read_text())
    assert [r["step"] for r in saved["records"]] == [1, 2]
    assert saved["prompt"] == reference["records"][1]["prompt"]

    again = run_script(run, "--steps", "5")
    assert again.returncode != 0 and "already exists" in again.stderr

    resumed = run_script(run, "--steps", "5", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((run / "checkpoint.json").read_text())
    assert [r["step"] for r in final["records"]] == [1, 2, 3, 4, 5]
    assert final["records"][:2] == saved["records"]
    assert without_timings(final) == without_timings(reference)


def test_resume_extends_steps_and_refuses_another_config(tmp_path):
    make_trainer(str(tmp_path), steps=2).fit()
    state = make_trainer(str(tmp_path), steps=3).fit(resume=True)
    assert [r["step"] for r in state["records"]] == [1, 2, 3]
    with pytest.raises(CheckpointError, match=r"config\.batch_size: checkpoint has 2, this run has 3"):
        make_trainer(str(tmp_path), steps=4, batch_size=3).fit(resume=True)
    with pytest.raises(CheckpointError, match="already exists"):
        make_trainer(str(tmp_path), steps=4).fit()


@pytest.fixture(scope="module")
def embedded():
    return tg.get_engine("embedded:transformers", max_tokens=48)


@pytest.mark.slow
def test_trainer_on_the_embedded_model(tmp_path, embedded):
    train, val, test = split(make_object_counting(12, seed=0), 4, 4, 4)
    trainer = Trainer(TrainerConfig(batch_size=2, steps=2), train, val, test, embedded, out_dir=tmp_path, progress=False)
    state = trainer.fit()
    assert (tmp_path / "plot.png").read_bytes()[:8] == PNG_MAGIC
    records = json.loads((tmp_path / "records.json").read_text())["records"]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert all(r["seconds"][p] >= 0 for p in PHASES) and r["seconds"]["forward"] > 0
        assert r["batches"]["forward"] == 1 and r["batches"]["backward"] == 2 and r["batches"]["step"] == 1
        assert r["tokens"]["prompt"] > 0 and r["tokens"]["completion"] > 0
        assert r["prompt"].strip()
    assert json.loads((tmp_path / "checkpoint.json").read_text())["prompt"] == state["prompt"]


@pytest.mark.slow
def test_cli_optimize_writes_outputs(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "localgrad.cli", "optimize", "--engine", "embedded:transformers",
         "--train", "2", "--val", "2", "--test", "2", "--batch-size", "2", "--steps", "1",
         "--max-tokens", "32", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validation" in result.stdout and "step 1:" in result.stdout
    for name in ("checkpoint.json", "records.json", "plot.png"):
        assert (out / name).is_file()
    assert len(json.loads((out / "records.json").read_text())["records"]) == 1
