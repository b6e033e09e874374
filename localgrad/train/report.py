"""report.html: one self-contained page per run (no scripts, no network) to look at what happened.

It shows validation and test score per step as an inline SVG chart and a table, each step's prompt
diff, every candidate with its scores and fate, and a sample of the feedback the prompt received.
Everything comes from the checkpoint's state, so a resumed or finished run can always redraw it.
"""
from __future__ import annotations

import difflib
import html
import re
from typing import Any

FEEDBACK_SAMPLE = 2
FEEDBACK_CHARS = 700
RESPONSE_SAMPLE = 2
RESPONSE_CHARS = 400

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: 0.5em; margin: 0.2em 0; max-width: 60em; }
ins { background: #d4f7d4; text-decoration: none; } del { background: #f9d0d0; }
.accepted { color: #0a6b0a; font-weight: bold; } .muted { color: #777; }
section.step { border-top: 2px solid #ddd; margin-top: 1.5em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _score(value: Any) -> str:
    return "" if value is None else f"{value:.3f}"


def word_diff(old: str, new: str) -> str:
    """HTML of the word-level changes from `old` to `new` (<del> removed, <ins> added)."""
    a, b = re.split(r"(\s+)", old), re.split(r"(\s+)", new)
    parts = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            parts.append(f"<del>{_e(''.join(a[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            parts.append(f"<ins>{_e(''.join(b[j1:j2]))}</ins>")
        if op == "equal":
            parts.append(_e("".join(a[i1:i2])))
    return "".join(parts)


def score_chart(initial: dict[str, Any], records: list[dict[str, Any]], width: int = 640, height: int = 260) -> str:
    """An inline SVG line chart of validation and test score per step (step 0 is the starting prompt)."""
    left, right, top, bottom = 48, 110, 14, 36
    steps = [0] + [r["step"] for r in records]
    span = max(steps[-1], 1)

    def x(step: int) -> float:
        return left + (width - left - right) * step / span

    def y(score: float) -> float:
        return top + (height - top - bottom) * (1 - score)

    out = [f'<svg id="scores" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           'aria-label="validation and test score per step">']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end">{tick:.2f}</text>')
    for step in steps:
        out.append(f'<text x="{x(step):.1f}" y="{height - bottom + 16}" font-size="11" text-anchor="middle">{step}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.1f}" y="{height - 4}" font-size="12" text-anchor="middle">step</text>')
    for key, label, color in (("val_score", "validation", "#1f77b4"), ("test_score", "test", "#ff7f0e")):
        values = [initial[key]] + [r[key] for r in records]
        points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(steps, values))
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        for s, v in zip(steps, values):
            out.append(f'<circle class="point" data-split="{label}" data-step="{s}" data-score="{v:.4f}" '
                       f'cx="{x(s):.1f}" cy="{y(v):.1f}" r="4" fill="{color}"><title>{label} step {s}: {v:.3f}</title></circle>')
        legend_y = top + (12 if key == "val_score" else 30)
        out.append(f'<rect x="{width - right + 12}" y="{legend_y - 8}" width="12" height="4" fill="{color}"/>'
                   f'<text x="{width - right + 30}" y="{legend_y - 3}" font-size="12">{label}</text>')
    out.append("</svg>")
    return "".join(out)


def _summary(state: dict[str, Any]) -> str:
    initial, records, totals, config = state["initial"], state["records"], state.get("totals", {}), state.get("config", {})
    final = records[-1] if records else initial
    accepted = sum(1 for r in records if r["accepted"])
    rows = [
        ("validation", f"{initial['val_score']:.3f} &rarr; {final['val_score']:.3f}"),
        ("test", f"{initial['test_score']:.3f} &rarr; {final['test_score']:.3f}"),
        ("steps", f"{len(records)} ({accepted} changed the prompt)"),
        ("candidates per step", _e(config.get("candidates", 1))),
        ("chosen on", "nothing (every update adopted)" if config.get("adopt_every_update") else _e(config.get("select_on", "val"))),
        ("frontier", f"yes ({len(state.get('pool', []))} prompts kept)" if config.get("frontier") else "no"),
        ("answer format", _e(config.get("answer_format", ""))),
        ("wall time", f"{totals.get('wall_seconds', 0):.1f} s ({totals.get('backend_seconds', 0):.1f} s in backend calls)"),
        ("backend batches / requests", f"{totals.get('batches', 0)} / {totals.get('requests', 0)}"),
        ("tokens", f"{totals.get('prompt_tokens', 0)} prompt + {totals.get('completion_tokens', 0)} generated"),
    ]
    return '<table id="summary">' + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _steps_table(initial: dict[str, Any], records: list[dict[str, Any]]) -> str:
    head = "<tr><th>step</th><th>parent</th><th>minibatch (parent)</th><th>validation</th><th>test</th><th>prompt</th><th>seconds</th></tr>"
    rows = [f'<tr data-step="0"><td class="num">0</td><td></td><td></td><td class="num val">{_score(initial["val_score"])}</td>'
            f'<td class="num test">{_score(initial["test_score"])}</td><td>starting prompt</td><td class="num">{initial.get("seconds", 0):.1f}</td></tr>']
    for r in records:
        fate = '<span class="accepted">changed</span>' if r["accepted"] else '<span class="muted">kept</span>'
        rows.append(
            f'<tr data-step="{r["step"]}"><td class="num">{r["step"]}</td><td class="num">{_e(r.get("parent", ""))}</td>'
            f'<td class="num">{_score(r["train_accuracy"])}</td><td class="num val">{_score(r["val_score"])}</td>'
            f'<td class="num test">{_score(r["test_score"])}</td><td>{fate}</td><td class="num">{r["seconds"]["total"]:.1f}</td></tr>'
        )
    return f'<table id="steps">{head}{"".join(rows)}</table>'


def _candidates_table(record: dict[str, Any]) -> str:
    head = "<tr><th>#</th><th>temperature</th><th>minibatch</th><th>validation</th><th>status</th><th>value (diff from the parent)</th></tr>"
    rows = []
    for i, c in enumerate(record["candidates"]):
        value = c["value"]
        if value is None:
            shown = f'<span class="muted">refused: {_e(c.get("problem") or "no readable value")}</span>'
        else:
            shown = f"<pre>{word_diff(record['parent_prompt'], value)}</pre>"
        status = f'<span class="accepted">{_e(c["status"])}</span>' if c["status"] == "accepted" else _e(c["status"])
        rows.append(
            f'<tr class="candidate" data-status="{_e(c["status"])}"><td class="num">{i}</td><td class="num">{c["temperature"]:g}</td>'
            f'<td class="num">{_score(c.get("minibatch_score"))}</td><td class="num">{_score(c.get("val_score"))}</td>'
            f"<td>{status}</td><td>{shown}</td></tr>"
        )
    return f'<table class="candidates">{head}{"".join(rows)}</table>'


def _step_section(record: dict[str, Any], previous_prompt: str) -> str:
    parts = [f'<section class="step" id="step-{record["step"]}"><h3>Step {record["step"]}</h3>']
    if record["accepted"]:
        parts.append(f'<p>Prompt changed (validation {_score(record["val_score"])}):</p><pre class="diff">{word_diff(previous_prompt, record["prompt"])}</pre>')
    else:
        parts.append('<p class="muted">No candidate beat the current prompt on validation; the prompt is unchanged.</p>')
    if record.get("update_error"):
        parts.append(f'<p class="muted">{_e(record["update_error"])}</p>')
    parts.append(_candidates_table(record))
    feedback = record.get("feedback", [])[:FEEDBACK_SAMPLE]
    if feedback:
        parts.append(f"<h4>Feedback on the prompt (sample of {len(feedback)} of {len(record.get('feedback', []))})</h4>")
        parts += [f'<pre class="feedback">{_e(f[:FEEDBACK_CHARS])}{"…" if len(f) > FEEDBACK_CHARS else ""}</pre>' for f in feedback]
    responses = record.get("responses", [])[:RESPONSE_SAMPLE]
    if responses:
        parts.append("<h4>Minibatch responses of the parent prompt (sample)</h4>")
        parts += [f'<pre class="response">{_e(t[:RESPONSE_CHARS])}</pre>' for t in responses]
    parts.append("</section>")
    return "".join(parts)


def render_report(state: dict[str, Any]) -> str:
    """The whole report page for a trainer state (what `Trainer.state()` and the checkpoint hold)."""
    initial, records = state["initial"], state["records"]
    sections, previous = [], initial["prompt"]
    for record in records:
        sections.append(_step_section(record, previous))
        previous = record["prompt"]
    final = records[-1]["prompt"] if records else initial["prompt"]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>localgrad run report</title>'
        f"<style>{STYLE}</style></head><body>"
        "<h1>localgrad prompt optimization</h1>"
        f"{_summary(state)}<h2>Scores per step</h2>{score_chart(initial, records)}{_steps_table(initial, records)}"
        f'<h2>Starting prompt</h2><pre id="initial-prompt">{_e(initial["prompt"])}</pre>'
        f'<h2>Final prompt</h2><pre id="final-prompt">{_e(final)}</pre>'
        f"<h2>Steps</h2>{''.join(sections)}</body></html>\n"
    )


__all__ = ["render_report", "score_chart", "word_diff"]
