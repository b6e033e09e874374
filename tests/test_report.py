"""report.html: self-contained, escaped, and rendered by a real headless Chromium with the run's data in it."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from trainer_script import make_trainer

from localgrad.train.report import render_report, word_diff

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
# The flags a sandboxed CI machine needs: no GPU, no first-run work, no network of its own.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
]
VAL_BLUE, TEST_ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    make_trainer(str(out), steps=3, candidates=3).fit()
    return out


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        check=False, capture_output=True, text=True, timeout=600,
    )


def test_report_is_self_contained_and_escapes_everything(run_dir):
    state = json.loads((run_dir / "checkpoint.json").read_text())
    html_text = (run_dir / "report.html").read_text()
    assert html_text == render_report(state)
    assert not re.search(r"<(script|link|img|iframe)\b", html_text)
    assert re.findall(r"https?://[^\"' ]+", html_text) == ["http://www.w3.org/2000/svg"]
    state["records"][0]["candidates"][0]["value"] = "<script>alert(1)</script> & more"
    state["records"][0]["feedback"] = ["</pre><b>bold</b>"]
    hostile = render_report(state)
    assert "<script>" not in hostile and "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile
    assert "</pre><b>bold</b>" not in hostile and "&lt;/pre&gt;&lt;b&gt;bold&lt;/b&gt;" in hostile


def test_word_diff_marks_removed_and_added_words():
    assert word_diff("count the apples", "count all the pears") == "count<ins> all</ins> the <del>apples</del><ins>pears</ins>"
    assert word_diff("a <b>", "a <b>") == "a &lt;b&gt;"


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium'; CI installs it)")
def test_chromium_renders_the_report_with_the_runs_data(run_dir, tmp_path):
    state = json.loads((run_dir / "checkpoint.json").read_text())
    url = (run_dir / "report.html").resolve().as_uri()
    dumped = chromium(tmp_path, "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    records = state["records"]
    points = re.findall(r'<circle class="point" data-split="(\w+)" data-step="(\d+)" data-score="([\d.]+)"', dom)
    expected = [("validation", state["initial"]["val_score"])] + [("validation", r["val_score"]) for r in records]
    assert [(split, float(score)) for split, _, score in points if split == "validation"] == [(s, round(v, 4)) for s, v in expected]
    tests = [float(score) for split, _, score in points if split == "test"]
    assert tests == [round(v, 4) for v in [state["initial"]["test_score"]] + [r["test_score"] for r in records]]
    rows = re.findall(r'<tr data-step="(\d+)">.*?<td class="num val">([\d.]+)</td><td class="num test">([\d.]+)</td>', dom)
    assert [(int(s), float(v), float(t)) for s, v, t in rows] == [
        (0, round(state["initial"]["val_score"], 3), round(state["initial"]["test_score"], 3))
    ] + [(r["step"], round(r["val_score"], 3), round(r["test_score"], 3)) for r in records]
    assert len(re.findall(r'<tr class="candidate"', dom)) == sum(len(r["candidates"]) for r in records)
    assert dom.count('class="feedback"') == sum(min(2, len(r["feedback"])) for r in records)
    accepted = [r for r in records if r["accepted"]]
    assert accepted and dom.count('<pre class="diff">') == len(accepted)
    assert "<ins>" in dom

    shot = tmp_path / "report.png"
    shown = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,1400", "--hide-scrollbars", url)
    assert shown.returncode == 0 and shot.is_file(), shown.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        colors = {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert VAL_BLUE in colors and TEST_ORANGE in colors
