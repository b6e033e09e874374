"""The Trainer: records, checkpoints, candidates and selection, resume after a kill, damaged checkpoints,
the output directory's lock, a full disk (scripted backend), and a real run + the CLI on the embedded model."""
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainer_script import make_trainer

from localgrad.cli import main as cli_main
from localgrad.errors import CheckpointError, InvalidInputError
from localgrad.train.tasks import make_object_counting, split
from localgrad.train.trainer import PHASES, Trainer, TrainerConfig

HERE = Path(__file__).parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMING_KEYS = ("seconds", "backend_seconds", "wall_seconds")
OUTPUTS = ("checkpoint.json", "records.json", "plot.png", "report.html")


def without_timings(value):
    """The value with every wall-clock field removed (they differ between runs)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def run_script(out_dir: Path, *args: str, preexec=None, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, str(HERE / "trainer_script.py"), str(out_dir), *args]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, preexec_fn=preexec)


def stray_files(directory: Path) -> list[str]:
    """Temporary files left behind (every output file is written under a dot-name first)."""
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


def test_config_is_validated():
    with pytest.raises(InvalidInputError, match="batch_size"):
        TrainerConfig(batch_size=0)
    with pytest.raises(InvalidInputError, match="steps= or epochs="):
        TrainerConfig(steps=None, epochs=None)
    with pytest.raises(InvalidInputError, match="eval_batch_size"):
        TrainerConfig(eval_batch_size=-1)
    with pytest.raises(InvalidInputError, match="candidates"):
        TrainerConfig(candidates=0)
    with pytest.raises(InvalidInputError, match="candidate_temperature"):
        TrainerConfig(candidate_temperature=0)
    with pytest.raises(InvalidInputError, match="answer_format"):
        TrainerConfig(answer_format="letters")
    with pytest.raises(InvalidInputError, match="select_on"):
        TrainerConfig(select_on="test")
    with pytest.raises(InvalidInputError, match="adopt_every_update"):
        TrainerConfig(adopt_every_update=True, candidates=2)
    assert TrainerConfig(constraints="be short").constraints == ("be short",), "one string is one rule"
    with pytest.raises(InvalidInputError, match="constraints"):
        TrainerConfig(constraints=["be short", 3])
    assert TrainerConfig(steps=None, epochs=2, batch_size=4).total_steps(10) == 6
    assert "Answer: $VALUE" in TrainerConfig().starting_prompt
    assert "allowed choices" in TrainerConfig(answer_format="choice").starting_prompt


def test_scripted_run_writes_records_checkpoint_plot_and_report(tmp_path):
    trainer = make_trainer(str(tmp_path), steps=4, candidates=3)
    state = trainer.fit()
    records = state["records"]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    previous = state["initial"]
    for r in records:
        assert set(r["seconds"]) == {*PHASES, "total"}
        assert r["batches"] == {"forward": 1, "loss": 0, "backward": 2, "step": 1, "select": 1, "eval": 1 if r["accepted"] else 0}
        assert len(r["candidates"]) == 3 and [c["temperature"] for c in r["candidates"]] == [0.0, 0.45, 0.9]
        scored = [c["val_score"] for c in r["candidates"] if c["val_score"] is not None]
        assert scored, r["candidates"]
        if r["accepted"]:
            (winner,) = [c for c in r["candidates"] if c["status"] == "accepted"]
            assert winner["val_score"] == max(scored) == r["val_score"] > previous["val_score"]
            assert r["prompt"] == winner["value"] != previous["prompt"]
        else:
            assert max(scored) <= previous["val_score"] == r["val_score"]
            assert r["prompt"] == previous["prompt"] and r["test_score"] == previous["test_score"]
        previous = r
    assert any(r["accepted"] for r in records) and not all(r["accepted"] for r in records)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["records"] == records and saved["prompt"] == trainer.system_prompt.value
    assert saved["pool"][saved["best"]]["prompt"] == saved["prompt"]
    assert saved["optimizer"]["proposals"] == 4
    assert saved["position"]["steps_done"] == 4
    assert saved["totals"]["batches"] == state["initial"]["usage"]["batches"] + sum(r["usage"]["batches"] for r in records)
    assert json.loads((tmp_path / "records.json").read_text())["records"] == records
    assert (tmp_path / "plot.png").read_bytes()[:8] == PNG_MAGIC
    report = (tmp_path / "report.html").read_text()
    assert all(f'id="step-{n}"' in report for n in (1, 2, 3, 4)) and "http" not in report.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not stray_files(tmp_path)


def test_minibatch_screening_sends_only_candidates_not_worse_to_validation(tmp_path):
    state = make_trainer(None, steps=4, candidates=4, select_on="minibatch+val").fit()
    statuses = [c["status"] for r in state["records"] for c in r["candidates"]]
    assert "worse on minibatch" in statuses
    for r in state["records"]:
        for c in r["candidates"]:
            if c["status"] == "worse on minibatch":
                assert c["minibatch_score"] < r["train_accuracy"] and c["val_score"] is None
            elif c["val_score"] is not None:
                assert c["minibatch_score"] >= r["train_accuracy"]
        assert r["batches"]["select"] in (1, 2)


def test_adopt_every_update_is_textgrads_plain_loop():
    state = make_trainer(None, steps=4, adopt_every_update=True).fit()
    assert all(r["accepted"] and r["prompt"] == r["candidates"][0]["value"] for r in state["records"])
    assert any(r["val_score"] < p["val_score"] for p, r in zip([state["initial"]] + state["records"], state["records"]))


def test_resume_after_kill_continues_at_next_step(tmp_path):
    reference = make_trainer(str(tmp_path / "reference"), steps=5, candidates=2).fit()
    run = tmp_path / "run"
    crashed = run_script(run, "--steps", "5", "--candidates", "2", "--exit-after", "2")
    assert crashed.returncode == 3, crashed.stderr
    saved = json.loads((run / "checkpoint.json").read_text())
    assert [r["step"] for r in saved["records"]] == [1, 2]
    assert saved["prompt"] == reference["records"][1]["prompt"]

    again = run_script(run, "--steps", "5", "--candidates", "2")
    assert again.returncode == 2 and "already exists" in again.stderr

    resumed = run_script(run, "--steps", "5", "--candidates", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((run / "checkpoint.json").read_text())
    assert [r["step"] for r in final["records"]] == [1, 2, 3, 4, 5]
    assert final["records"][:2] == saved["records"]
    assert without_timings(final) == without_timings(reference)


def test_kill_9_at_random_points_resumes_to_the_uninterrupted_result(tmp_path):
    reference_trainer = make_trainer(str(tmp_path / "reference"), steps=4, candidates=2)
    reference = reference_trainer.fit()
    calls = len(reference_trainer.engine.backend.calls)
    for point in sorted(random.Random(14).sample(range(1, calls + 1), 4)):
        run = tmp_path / f"killed-at-{point}"
        killed = run_script(run, "--steps", "4", "--candidates", "2", "--kill-at-call", str(point))
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        resumed = run_script(run, "--steps", "4", "--candidates", "2", *(["--resume"] if (run / "checkpoint.json").exists() else []))
        assert resumed.returncode == 0, (point, resumed.stderr)
        final = json.loads((run / "checkpoint.json").read_text())
        assert without_timings(final) == without_timings(reference), f"killed at backend call {point} of {calls}"
        assert not stray_files(run)


def test_kill_between_checkpoint_and_records_is_repaired_by_resume(tmp_path):
    killed = run_script(tmp_path, "--steps", "3", "--kill-after-checkpoint", "3")
    assert killed.returncode == 4, killed.stderr
    checkpoint = json.loads((tmp_path / "checkpoint.json").read_text())
    assert len(checkpoint["records"]) == 3
    assert len(json.loads((tmp_path / "records.json").read_text())["records"]) == 2
    report_before = (tmp_path / "report.html").read_text()
    assert 'id="step-3"' not in report_before

    resumed = run_script(tmp_path, "--steps", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "records.json").read_text())["records"] == checkpoint["records"]
    assert 'id="step-3"' in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "checkpoint.json").read_text()) == checkpoint
    assert not stray_files(tmp_path)


def test_resume_extends_steps_and_refuses_another_config(tmp_path):
    make_trainer(str(tmp_path), steps=2).fit()
    state = make_trainer(str(tmp_path), steps=3).fit(resume=True)
    assert [r["step"] for r in state["records"]] == [1, 2, 3]
    with pytest.raises(CheckpointError, match=r"config\.batch_size: checkpoint has 2, this run has 3"):
        make_trainer(str(tmp_path), steps=4, batch_size=3).fit(resume=True)
    with pytest.raises(CheckpointError, match="already exists"):
        make_trainer(str(tmp_path), steps=4).fit()


def _damage_cases(saved: dict) -> dict[str, bytes]:
    """Named ways a checkpoint file can be damaged or edited, as the bytes written in its place."""

    def edited(change) -> bytes:
        copy = json.loads(json.dumps(saved))
        change(copy)
        return json.dumps(copy).encode()

    return {
        "empty file": b"",
        "not UTF-8": b"\xff\xfe\x00garbage\x80",
        "truncated": json.dumps(saved).encode()[:200],
        "a list": b"[1, 2, 3]",
        "deeply nested": b"[" * 100000 + b"]" * 100000,
        "no version": edited(lambda c: c.pop("version")),
        "version 1": edited(lambda c: c.update(version=1)),
        "no prompt": edited(lambda c: c.pop("prompt")),
        "prompt is a number": edited(lambda c: c.update(prompt=5)),
        "no identity": edited(lambda c: c.pop("identity")),
        "identity is a string": edited(lambda c: c.update(identity="x")),
        "records is a dict": edited(lambda c: c.update(records={})),
        "record without step": edited(lambda c: c["records"][0].pop("step")),
        "record score is text": edited(lambda c: c["records"][0].update(val_score="high")),
        "records out of order": edited(lambda c: c["records"].reverse()),
        "record usage missing a field": edited(lambda c: c["records"][0]["usage"].pop("batches")),
        "initial is null": edited(lambda c: c.update(initial=None)),
        "optimizer without memory": edited(lambda c: c["optimizer"].pop("memory")),
        "optimizer memory entry wrong": edited(lambda c: c["optimizer"].update(memory=[[{"value": 1}]])),
        "optimizer for two parameters": edited(lambda c: c["optimizer"].update(memory=[[], []])),
        "steps is a bool": edited(lambda c: c["optimizer"].update(steps=True)),
        "best out of range": edited(lambda c: c.update(best=99)),
        "pool empty": edited(lambda c: c.update(pool=[])),
        "pool results of the wrong length": edited(lambda c: c["pool"][0].update(val=[1])),
        "pool results not zeros and ones": edited(lambda c: c["pool"][0].update(val=[2] * len(c["pool"][0]["val"]))),
        "prompt not the best": edited(lambda c: c.update(prompt="edited by hand")),
        "candidates not a list": edited(lambda c: c["records"][0].update(candidates="many")),
        "responses not text": edited(lambda c: c["records"][0].update(responses=[1, 2])),
        "proposal count is text": edited(lambda c: c["optimizer"].update(proposals="3")),
    }


def test_every_damaged_checkpoint_is_a_checkpoint_error(tmp_path):
    make_trainer(str(tmp_path / "good"), steps=2, candidates=2).fit()
    good = (tmp_path / "good" / "checkpoint.json").read_bytes()
    cases = _damage_cases(json.loads(good))
    for name, data in cases.items():
        run = tmp_path / name.replace(" ", "_")
        run.mkdir()
        (run / "checkpoint.json").write_bytes(data)
        with pytest.raises(CheckpointError) as caught:
            make_trainer(str(run), steps=3, candidates=2).fit(resume=True)
        assert "checkpoint" in str(caught.value).lower(), name
    assert len(cases) >= 20
    folder = tmp_path / "checkpoint_is_a_folder"
    (folder / "checkpoint.json").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="Cannot read the checkpoint"):
        make_trainer(str(folder), steps=3, candidates=2).fit(resume=True)


def test_out_naming_a_file_fails_before_any_work(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("not a directory")
    with pytest.raises(CheckpointError, match="is an existing file"):
        make_trainer(str(target))
    code = cli_main(["optimize", "--engine", "no-such-engine-name", "--out", str(target)])
    assert code == 1
    error = capsys.readouterr().err
    assert "is an existing file" in error and "no-such-engine-name" not in error


def test_a_second_run_into_the_same_directory_fails_fast(tmp_path):
    release = tmp_path / "release"
    first = run_script(tmp_path / "run", "--steps", "2", "--wait-for", str(release), wait=False)
    try:
        assert first.stdout.readline().strip() == "waiting"
        started = time.perf_counter()
        with pytest.raises(CheckpointError, match="Another run is writing to"):
            make_trainer(str(tmp_path / "run"), steps=2).fit(resume=True)
        assert time.perf_counter() - started < 60
    finally:
        release.write_text("go")
        _, err = first.communicate()
    assert first.returncode == 0, err
    state = make_trainer(str(tmp_path / "run"), steps=2).fit(resume=True)
    assert [r["step"] for r in state["records"]] == [1, 2]


def _small_file_limit():
    """Run in the child: files may grow to 6 KB only, as on a full disk (EFBIG instead of ENOSPC)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))


def test_a_full_disk_is_a_checkpoint_error_and_leaves_no_temp_files(tmp_path):
    result = run_script(tmp_path, "--steps", "3", preexec=_small_file_limit)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "localgrad: error: Cannot write" in result.stderr and "--resume" in result.stderr
    assert "Traceback" not in result.stderr
    assert not stray_files(tmp_path)


@pytest.mark.slow
def test_trainer_with_candidates_on_the_embedded_model(tmp_path, embedded):
    train, val, test = split(make_object_counting(10, seed=0), 2, 4, 4)
    config = TrainerConfig(batch_size=2, steps=1, candidates=3, eval_batch_size=None)
    trainer = Trainer(config, train, val, test, embedded, out_dir=tmp_path, progress=False)
    state = trainer.fit()
    records = json.loads((tmp_path / "records.json").read_text())["records"]
    assert [r["step"] for r in records] == [1]
    for r in records:
        assert all(r["seconds"][p] >= 0 for p in PHASES) and r["seconds"]["forward"] > 0
        assert r["batches"]["forward"] == 1 and r["batches"]["backward"] == 2 and r["batches"]["step"] in (1, 2)
        assert r["batches"]["select"] <= 1
        assert len(r["candidates"]) == 3 and r["candidates"][0]["temperature"] == 0.0
        assert r["tokens"]["prompt"] > 0 and r["tokens"]["completion"] > 0
        assert r["prompt"].strip()
    assert json.loads((tmp_path / "checkpoint.json").read_text())["prompt"] == state["prompt"]
    for name in OUTPUTS:
        assert (tmp_path / name).is_file()


@pytest.mark.slow
def test_cli_optimize_writes_outputs(tmp_path, embedded, capsys):
    out = tmp_path / "run"
    code = cli_main([
        "optimize", "--engine", "embedded:transformers", "--train", "2", "--val", "2", "--test", "2",
        "--batch-size", "2", "--steps", "1", "--candidates", "2", "--max-tokens", "24", "--out", str(out),
    ])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    assert "validation" in printed.out and "step 1:" in printed.out and "report.html" in printed.out
    for name in OUTPUTS:
        assert (out / name).is_file()
    assert len(json.loads((out / "records.json").read_text())["records"]) == 1

