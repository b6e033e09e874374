"""scripts/bench_quality.py end to end on a scripted backend: both loops, same splits, the table and results.json."""
import importlib.util
import json
from pathlib import Path

from trainer_script import ScriptedBackend

from localgrad.engine.registry import register_backend
from localgrad.train.tasks import make_object_counting

SCRIPT = Path(__file__).parent.parent / "scripts" / "bench_quality.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_quality_runs_both_loops_on_the_same_splits(tmp_path, capsys):
    register_backend("scripted-bench", lambda spec, **options: ScriptedBackend())
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": e.question, "answer": e.answer}) for e in make_object_counting(20, seed=5)))
    out = tmp_path / "runs"
    bench = load_script()
    code = bench.main([
        "--data", str(data), "--engine", "scripted-bench:x", "--train", "4", "--val", "6", "--test", "6",
        "--batch-size", "2", "--steps", "2", "--seeds", "0", "1", "--candidates", "3", "--out", str(out),
    ])
    printed = capsys.readouterr().out
    assert code == 0, printed
    results = json.loads((out / "results.json").read_text())
    assert [(r["loop"], r["seed"]) for r in results] == [("textgrad", 0), ("localgrad", 0), ("textgrad", 1), ("localgrad", 1)]
    for r in results:
        assert r["test_questions"] == 6 and r["steps"] == 2 and r["wall_seconds"] >= 0
        line = f"{r['loop']:<10} {r['seed']:>4} {6:>6} {r['test_before']:>11.3f} {r['test_after']:>10.3f}"
        assert line in printed
    for seed in (0, 1):
        textgrad = json.loads((out / f"textgrad-seed{seed}" / "checkpoint.json").read_text())
        localgrad = json.loads((out / f"localgrad-seed{seed}" / "checkpoint.json").read_text())
        assert textgrad["identity"]["data"] == localgrad["identity"]["data"]
        assert textgrad["initial"]["test_score"] == localgrad["initial"]["test_score"]
        assert textgrad["totals"]["batches"] == textgrad["totals"]["requests"]
        assert all(r["accepted"] and len(r["candidates"]) == 1 for r in textgrad["records"])
        assert all(len(r["candidates"]) == 3 for r in localgrad["records"])
        assert localgrad["totals"]["batches"] < localgrad["totals"]["requests"]
        assert all(r["val_score"] >= localgrad["initial"]["val_score"] for r in localgrad["records"])
    assert "wall time localgrad / textgrad:" in printed

    again = bench.main([
        "--data", str(data), "--engine", "scripted-bench:x", "--train", "4", "--val", "6", "--test", "6",
        "--batch-size", "2", "--steps", "2", "--seeds", "0", "--loops", "localgrad", "--candidates", "3", "--out", str(out),
    ])
    assert again == 0
    assert json.loads((out / "results.json").read_text())[0]["test_after"] == results[1]["test_after"]
