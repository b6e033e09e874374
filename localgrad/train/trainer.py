"""Minibatch prompt optimization, as in textgrad's prompt-optimization tutorial, with batched execution
and candidates chosen on validation.

Each step starts from a parent prompt (the best so far, or a frontier prompt), runs the minibatch
forward as one batch, the metric, a level-batched backward, and one optimizer batch proposing K
candidate prompts. The candidates are scored on the minibatch and/or the validation set (one batch
each); the best one replaces the current prompt only when it beats it on validation (ties keep the
current prompt). With `adopt_every_update` the step takes the first candidate unchecked, as
textgrad's plain loop does. After every step a JSON checkpoint (config, prompts and their validation
results, optimizer state, records) is replaced atomically, so `resume=True` continues at the next step,
and records.json, plot.png and report.html are rewritten from it.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localgrad.autograd.functional import sum as sum_variables
from localgrad.autograd.llm_ops import content_parts
from localgrad.engine import Engine, Usage, get_engine
from localgrad.errors import (
    CheckpointError,
    InvalidInputError,
    LocalgradError,
    check_int,
)
from localgrad.model import BlackboxLLM
from localgrad.optimizer.candidates import MAX_CANDIDATES, Candidate
from localgrad.optimizer.tgd import DEFAULT_CANDIDATE_TEMPERATURE, TGD
from localgrad.prompts import train as P
from localgrad.request import Request
from localgrad.train.files import (
    RunLock,
    check_out_dir,
    plot_scores,
    read_checkpoint,
    write_json_atomic,
    write_text_atomic,
)
from localgrad.train.report import render_report
from localgrad.train.selection import Scored, best_index, pick_parent
from localgrad.train.tasks import (
    ANSWER_FORMATS,
    Example,
    exact_match_loss,
    get_answer_format,
)
from localgrad.variable import Variable

CHECKPOINT_VERSION = 2
CHECKPOINT_FILE = "checkpoint.json"
RECORDS_FILE = "records.json"
PLOT_FILE = "plot.png"
REPORT_FILE = "report.html"
PHASES = ("forward", "loss", "backward", "step", "select", "eval")
# Options that may change between a run and its resumption: they only say when to stop.
RESUMABLE_CHANGES = ("steps", "epochs")
SELECT_ON = ("val", "minibatch+val")


@dataclass(frozen=True)
class TrainerConfig:
    """Options of a prompt-optimization run, validated when built.

    Give `steps` (minibatches in all) or `epochs` (passes over the training set); `steps` wins when
    both are set. `eval_batch_size` caps one evaluation batch (None: a whole split at once).
    `answer_format` says how answers are read ('number', 'choice', 'text'); `answer_hint` appends its
    instruction to every question so no prompt can lose it; `initial_prompt` None starts from the
    format's task description. `candidates` is K, the new prompts proposed per step (1 is plain TGD),
    sampled up to `candidate_temperature`; `select_on` 'minibatch+val' scores them on the minibatch
    first and sends to validation only those not worse than the parent there. `frontier` starts each
    step from a prompt of the Pareto frontier over validation examples (None, the default: on, except
    in textgrad's plain loop; measured to help, see the README). `adopt_every_update` takes the first
    candidate unchecked (textgrad's plain loop).
    """

    batch_size: int = 4
    steps: int | None = 3
    epochs: int | None = None
    seed: int = 0
    eval_batch_size: int | None = 32
    initial_prompt: str | None = None
    prompt_role: str = P.SYSTEM_PROMPT_ROLE
    constraints: tuple[str, ...] = ()
    answer_format: str = "number"
    answer_hint: bool = True
    candidates: int = 1
    candidate_temperature: float = DEFAULT_CANDIDATE_TEMPERATURE
    select_on: str = "val"
    frontier: bool | None = None
    adopt_every_update: bool = False

    def __post_init__(self):
        _positive("batch_size", self.batch_size)
        if self.steps is None and self.epochs is None:
            raise InvalidInputError("TrainerConfig needs steps= or epochs=.")
        if self.steps is not None:
            _positive("steps", self.steps)
        if self.epochs is not None:
            _positive("epochs", self.epochs)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidInputError(f"TrainerConfig.seed must be an int, got {self.seed!r}.")
        if self.eval_batch_size is not None:
            _positive("eval_batch_size", self.eval_batch_size)
        if self.initial_prompt is not None and (not isinstance(self.initial_prompt, str) or not self.initial_prompt.strip()):
            raise InvalidInputError("TrainerConfig.initial_prompt must be a non-empty string or None.")
        if not isinstance(self.prompt_role, str) or not self.prompt_role.strip():
            raise InvalidInputError("TrainerConfig.prompt_role must be a non-empty string.")
        rules = (self.constraints,) if isinstance(self.constraints, str) else self.constraints
        if not isinstance(rules, (list, tuple)) or not all(isinstance(c, str) for c in rules):
            raise InvalidInputError(f"TrainerConfig.constraints must be a str or a list of str, got {self.constraints!r:.80}.")
        object.__setattr__(self, "constraints", tuple(rules))
        if self.answer_format not in ANSWER_FORMATS:
            raise InvalidInputError(f"TrainerConfig.answer_format must be one of {sorted(ANSWER_FORMATS)}, got {self.answer_format!r}.")
        check_int("TrainerConfig.candidates", self.candidates, 1, MAX_CANDIDATES)
        temperature = self.candidate_temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature <= 2:
            raise InvalidInputError(f"TrainerConfig.candidate_temperature must be a number in (0, 2], got {temperature!r}.")
        if self.select_on not in SELECT_ON:
            raise InvalidInputError(f"TrainerConfig.select_on must be one of {SELECT_ON}, got {self.select_on!r}.")
        if self.frontier is None:
            object.__setattr__(self, "frontier", not self.adopt_every_update)
        for name in ("answer_hint", "frontier", "adopt_every_update"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(f"TrainerConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        if self.adopt_every_update and (self.candidates > 1 or self.frontier):
            raise InvalidInputError("adopt_every_update takes the first candidate unchecked: use it with candidates=1 and frontier=False.")

    def total_steps(self, train_size: int) -> int:
        """How many optimization steps this config asks for on a training set of `train_size`."""
        if self.steps is not None:
            return self.steps
        return self.epochs * math.ceil(train_size / self.batch_size)  # type: ignore[operator]

    @property
    def starting_prompt(self) -> str:
        """The prompt the run starts from: `initial_prompt`, or the answer format's task description."""
        return self.initial_prompt or P.INITIAL_PROMPT_BY_FORMAT[self.answer_format]


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"TrainerConfig.{name} must be a positive int, got {value!r}.")


@dataclass
class StepOutcome:
    """What one training step produced: the responses, the losses, the feedback and the candidates."""

    responses: list[str]
    losses: list[str]
    prompt_feedback: list[str]
    candidates: list[Candidate]


@dataclass
class _Meter:
    """Usage of one or two engines between `start` and `stop`, with the wall time."""

    engines: list[Engine]
    seconds: float = 0.0
    usage: Usage = field(default_factory=Usage)

    def __enter__(self) -> _Meter:
        self._before = [e.usage.snapshot() for e in self.engines]
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._started
        for engine, before in zip(self.engines, self._before):
            self.usage = self.usage + (engine.usage - before)


def fingerprint(examples: Sequence[Example]) -> str:
    """A short hash of a dataset split, to tell a checkpoint's data from other data."""
    rows = [[e.question, e.answer, *e.choices] if e.choices else [e.question, e.answer] for e in examples]
    return hashlib.sha256(json.dumps(rows).encode("utf-8")).hexdigest()[:16]


def epoch_order(seed: int, epoch: int, train_size: int) -> list[int]:
    """The training examples' order in an epoch: a shuffle fixed by (seed, epoch)."""
    order = list(range(train_size))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


class Trainer:
    """Optimize a system prompt on question/answer examples with textual gradients, in batches.

    `engine` runs the forward calls; `backward_engine` (default: the same) runs feedback and updates.
    With `out_dir`, a checkpoint, the records, a plot and report.html are written there after every step.
    """

    def __init__(
        self,
        config: TrainerConfig,
        train_set: Sequence[Example],
        val_set: Sequence[Example],
        test_set: Sequence[Example],
        engine: Engine | str,
        backward_engine: Engine | str | None = None,
        out_dir: str | Path | None = None,
        progress: bool = True,
    ):
        if not isinstance(config, TrainerConfig):
            raise InvalidInputError(f"Trainer needs a TrainerConfig, got {type(config).__name__}.")
        if not train_set:
            raise InvalidInputError("Trainer needs at least one training example.")
        if not val_set:
            raise InvalidInputError("Trainer needs at least one validation example (it chooses among candidates on it).")
        self.config = config
        self.train_set, self.val_set, self.test_set = list(train_set), list(val_set), list(test_set)
        for name, examples in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set)):
            if not all(isinstance(e, Example) for e in examples):
                raise InvalidInputError(f"The {name} set must hold localgrad.train.Example items.")
        self.out_dir = check_out_dir(out_dir) if out_dir is not None else None
        self.answer_format = get_answer_format(config.answer_format)
        if config.answer_format == "choice":
            unlabeled = [e.question[:60] for e in self.train_set + self.val_set + self.test_set if not e.choices]
            if unlabeled:
                raise InvalidInputError(f"answer_format 'choice' needs choices on every example; {unlabeled[0]!r} has none.")
        self.engine = get_engine(engine)
        self.backward_engine = get_engine(backward_engine) if backward_engine is not None else self.engine
        self.progress = progress
        self.system_prompt = Variable(config.starting_prompt, requires_grad=True, role_description=config.prompt_role)
        self.model = BlackboxLLM(self.engine, self.system_prompt)
        self.loss_fn = exact_match_loss(self.answer_format)
        self.optimizer = TGD([self.system_prompt], engine=self.backward_engine, constraints=list(config.constraints))
        self.records: list[dict[str, Any]] = []
        self.pool: list[Scored] = []
        self.best = 0
        self.initial: dict[str, Any] | None = None

    @property
    def engines(self) -> list[Engine]:
        """The distinct engines this run uses (forward first)."""
        return [self.engine] if self.backward_engine is self.engine else [self.engine, self.backward_engine]

    def identity(self) -> dict[str, Any]:
        """Everything a checkpoint must share with this run to be resumed by it."""
        config = {k: v for k, v in asdict(self.config).items() if k not in RESUMABLE_CHANGES}
        config["constraints"] = list(self.config.constraints)
        return {
            "config": config,
            "engine": _engine_identity(self.engine),
            "backward_engine": _engine_identity(self.backward_engine),
            "data": {name: fingerprint(s) for name, s in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set))},
        }

    def question_text(self, example: Example) -> str:
        """What the model is asked: the question, with the answer format's instruction when `answer_hint` is on."""
        if not self.config.answer_hint:
            return example.question
        return f"{example.question}\n\n{self.answer_format.instruction(example)}"

    def score_prompts(self, prompts: Sequence[str], examples: Sequence[Example]) -> list[list[int]]:
        """Per-example results (1 correct, 0 wrong) of each prompt: every (prompt, example) pair in one
        batch, sent in pieces of `eval_batch_size`; no graph is kept."""
        if not prompts or not examples:
            return [[] for _ in prompts]
        requests = [
            Request.chat(content_parts([Variable(self.question_text(e), requires_grad=False, role_description=P.QUESTION_ROLE)]),
                         system=prompt, sampling=self.engine.sampling)
            for prompt in prompts for e in examples
        ]
        chunk = self.config.eval_batch_size or len(requests)
        texts: list[str] = []
        for start in range(0, len(requests), chunk):
            texts += [c.text for c in self.engine.generate_batch(requests[start:start + chunk])]
        n = len(examples)
        return [
            [int(self.answer_format.is_correct(texts[p * n + i], e)) for i, e in enumerate(examples)]
            for p in range(len(prompts))
        ]

    def evaluate(self, examples: Sequence[Example]) -> float:
        """Exact-match accuracy of the current prompt on `examples` (forward batches of `eval_batch_size`)."""
        if not examples:
            return 0.0
        (results,) = self.score_prompts([self.system_prompt.value], examples)
        return sum(results) / len(examples)

    def train_step(self, batch: Sequence[Example], timings: dict[str, _Meter] | None = None) -> StepOutcome:
        """One step on a minibatch from the current prompt: forward (one batch), metric, backward (one batch
        a level), and K candidate prompts (one batch). The prompt itself is not changed."""
        meters = timings if timings is not None else {}
        engines = self.engines
        self.optimizer.zero_grad()
        questions = [Variable(self.question_text(e), requires_grad=False, role_description=P.QUESTION_ROLE) for e in batch]
        answers = [Variable(e.answer, requires_grad=False, role_description=P.ANSWER_ROLE) for e in batch]
        with meters.setdefault("forward", _Meter(engines)):
            responses = self.model(questions)
        with meters.setdefault("loss", _Meter(engines)):
            inputs = []
            for response, answer, example in zip(responses, answers, batch):
                mapping = {"prediction": response, "ground_truth_answer": answer}
                if example.choices:
                    mapping["choices"] = Variable("\n".join(example.choices), requires_grad=False, role_description=P.CHOICES_ROLE)
                inputs.append(mapping)
            losses = self.loss_fn(inputs)
        with meters.setdefault("backward", _Meter(engines)):
            sum_variables(losses).backward(self.backward_engine)
        feedback = [g.value for g in self.system_prompt.gradients]
        with meters.setdefault("step", _Meter(engines)):
            (candidates,) = self.optimizer.propose(self.config.candidates, self.config.candidate_temperature)
        return StepOutcome(
            responses=[r.value for r in responses],
            losses=[loss.value for loss in losses],
            prompt_feedback=feedback,
            candidates=candidates,
        )

    def fit(self, resume: bool = False, callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Run the configured steps (continuing a checkpoint with `resume=True`) and return the final state.

        `callback(record)` runs after each step's checkpoint is written. With an output directory the
        run holds its lock: a second run into the same directory fails at once.
        """
        if self.out_dir is None:
            return self._fit(resume, callback)
        with RunLock(self.out_dir):
            return self._fit(resume, callback)

    def _fit(self, resume: bool, callback: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
        from tqdm.auto import tqdm

        total = self.config.total_steps(len(self.train_set))
        if self._restore(resume):
            self._write_outputs(self.state())
        else:
            with _Meter(self.engines) as meter:
                (val,) = self.score_prompts([self.system_prompt.value], self.val_set)
                test = self.evaluate(self.test_set)
            self.pool, self.best = [Scored(self.system_prompt.value, val, 0)], 0
            self.initial = {"prompt": self.system_prompt.value, "val_score": self.pool[0].score, "test_score": test,
                            "seconds": round(meter.seconds, 3), "usage": meter.usage.to_dict()}
            self._save()
        bar = tqdm(total=total, initial=min(len(self.records), total), desc="optimizing", unit="step", disable=not self.progress)
        with bar:
            for index in range(len(self.records), total):
                record = self._run_step(index)
                self.records.append(record)
                self._save()
                bar.set_postfix(train=f"{record['train_accuracy']:.2f}", val=f"{record['val_score']:.2f}", test=f"{record['test_score']:.2f}")
                bar.update(1)
                if callback is not None:
                    callback(record)
        return self.state()

    def _batch_indices(self, index: int) -> tuple[int, list[int]]:
        per_epoch = math.ceil(len(self.train_set) / self.config.batch_size)
        epoch, position = divmod(index, per_epoch)
        order = epoch_order(self.config.seed, epoch, len(self.train_set))
        return epoch, order[position * self.config.batch_size:(position + 1) * self.config.batch_size]

    def _run_step(self, index: int) -> dict[str, Any]:
        epoch, indices = self._batch_indices(index)
        batch = [self.train_set[i] for i in indices]
        started = time.perf_counter()
        meters: dict[str, _Meter] = {p: _Meter(self.engines) for p in PHASES}
        parent = pick_parent(self.pool, random.Random(f"{self.config.seed}:parent:{index}")) if self.config.frontier else self.best
        previous_best = self.best
        self.system_prompt.set_value(self.pool[parent].prompt)
        outcome = self.train_step(batch, meters)
        parent_correct = [int(loss == "1") for loss in outcome.losses]
        candidates = self._judge(outcome.candidates, parent, batch, parent_correct, meters)
        with meters["eval"]:
            if self.best != previous_best:
                self.system_prompt.set_value(self.pool[self.best].prompt)
                test = self.evaluate(self.test_set)
            else:
                test = self._last("test_score")
        self.system_prompt.set_value(self.pool[self.best].prompt)
        usage = sum((meter.usage for meter in meters.values()), Usage())
        return {
            "step": index + 1,
            "epoch": epoch,
            "batch_indices": indices,
            "parent": parent,
            "parent_prompt": self.pool[parent].prompt,
            "train_accuracy": sum(parent_correct) / len(parent_correct),
            "feedback": outcome.prompt_feedback,
            "responses": outcome.responses,
            "candidates": candidates,
            "accepted": self.best != previous_best,
            "val_score": self.pool[self.best].score,
            "test_score": test,
            "prompt": self.pool[self.best].prompt,
            "update_error": None if any(c.value is not None for c in outcome.candidates) else "no candidate had a parseable value",
            "seconds": {**{p: round(meters[p].seconds, 3) for p in PHASES}, "total": round(time.perf_counter() - started, 3)},
            "batches": {p: meters[p].usage.batches for p in PHASES},
            "tokens": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens},
            "usage": usage.to_dict(),
        }

    def _judge(
        self, proposed: list[Candidate], parent: int, batch: Sequence[Example], parent_correct: list[int], meters: dict[str, _Meter]
    ) -> list[dict[str, Any]]:
        """Score the candidates and update the pool and the best prompt; the candidates as records."""
        records = [{"value": c.value, "problem": c.problem, "temperature": c.temperature, "seed": c.seed, "minibatch_score": None,
                    "val_score": None, "status": "refused" if c.value is None else "same as parent"} for c in proposed]
        known = {entry.prompt for entry in self.pool}
        fresh: dict[str, int] = {}
        for i, c in enumerate(proposed):
            if c.value is None or c.value == self.pool[parent].prompt:
                continue
            if c.value in fresh or c.value in known:
                records[i]["status"] = "duplicate"
                continue
            fresh[c.value] = i
        if self.config.adopt_every_update:
            return self._adopt(proposed[0], records, meters)
        values = list(fresh)
        with meters["select"]:
            if self.config.select_on == "minibatch+val" and values:
                parent_score = sum(parent_correct) / len(parent_correct)
                for value, results in zip(list(values), self.score_prompts(values, batch)):
                    score = sum(results) / len(results)
                    records[fresh[value]]["minibatch_score"] = score
                    if score < parent_score:
                        records[fresh[value]]["status"] = "worse on minibatch"
                        values.remove(value)
            scored = [Scored(value, results, len(self.records) + 1) for value, results in zip(values, self.score_prompts(values, self.val_set))]
        for entry in scored:
            records[fresh[entry.prompt]]["val_score"] = entry.score
            records[fresh[entry.prompt]]["status"] = "not better"
        winner = max(scored, key=lambda e: e.score, default=None)
        if winner is not None and winner.score > self.pool[self.best].score:
            records[fresh[winner.prompt]]["status"] = "accepted"
        if self.config.frontier:
            self.pool += [e for e in scored if not any(_covers(other.val, e.val) for other in self.pool)]
        elif winner is not None and winner.score > self.pool[self.best].score:
            self.pool.append(winner)
        self.best = best_index(self.pool)
        return records

    def _adopt(self, candidate: Candidate, records: list[dict[str, Any]], meters: dict[str, _Meter]) -> list[dict[str, Any]]:
        """textgrad's plain loop: the first candidate becomes the prompt, scored on validation for the record."""
        if candidate.value is None:
            return records
        with meters["select"]:
            (results,) = self.score_prompts([candidate.value], self.val_set)
        records[0].update(val_score=sum(results) / len(results), status="accepted")
        self.pool.append(Scored(candidate.value, results, len(self.records) + 1))
        self.best = len(self.pool) - 1
        return records

    def current_val_score(self) -> float:
        """The validation score of the best prompt so far."""
        return self._last("val_score")

    def _last(self, key: str) -> float:
        source = self.records[-1] if self.records else self.initial
        if source is None:
            raise CheckpointError("No evaluation yet: call fit() first.")
        return source[key]

    def totals(self) -> dict[str, Any]:
        """The run's usage totals (initial evaluation and every step, across resumptions) as plain values."""
        parts = ([self.initial["usage"]] if self.initial else []) + [r["usage"] for r in self.records]
        keys = ("batches", "requests", "cached", "prompt_tokens", "completion_tokens")
        out: dict[str, Any] = {k: sum(p[k] for p in parts) for k in keys}
        out["backend_seconds"] = round(sum(p["backend_seconds"] for p in parts), 4)
        out["wall_seconds"] = round((self.initial["seconds"] if self.initial else 0) + sum(r["seconds"]["total"] for r in self.records), 3)
        return out

    def state(self) -> dict[str, Any]:
        """The whole run as plain values: what the checkpoint holds."""
        steps_done = len(self.records)
        epoch, _ = self._batch_indices(steps_done)
        per_epoch = math.ceil(len(self.train_set) / self.config.batch_size)
        return {
            "version": CHECKPOINT_VERSION,
            "identity": self.identity(),
            "config": {**asdict(self.config), "constraints": list(self.config.constraints)},
            "prompt": self.system_prompt.value,
            "optimizer": self.optimizer.state_dict(),
            "position": {
                "steps_done": steps_done,
                "epoch": epoch,
                "batch_in_epoch": steps_done % per_epoch,
                "epoch_order": epoch_order(self.config.seed, epoch, len(self.train_set)),
            },
            "initial": self.initial,
            "records": self.records,
            "pool": [entry.to_dict() for entry in self.pool],
            "best": self.best,
            "totals": self.totals(),
        }

    def _save(self) -> None:
        if self.out_dir is None:
            return
        state = self.state()
        write_json_atomic(self.out_dir / CHECKPOINT_FILE, state)
        self._write_outputs(state)

    def _write_outputs(self, state: dict[str, Any]) -> None:
        """records.json, plot.png and report.html, all derived from the checkpoint's state."""
        if self.out_dir is None:
            return
        write_json_atomic(self.out_dir / RECORDS_FILE, {"initial": state["initial"], "records": state["records"], "totals": state["totals"]})
        plot_scores(state["records"], state["initial"], self.out_dir / PLOT_FILE)
        write_text_atomic(self.out_dir / REPORT_FILE, render_report(state))

    def _restore(self, resume: bool) -> bool:
        """Load the checkpoint when resuming; True when one was loaded."""
        if self.out_dir is None:
            if resume:
                raise CheckpointError("resume=True needs an out_dir holding a checkpoint.")
            return False
        path = self.out_dir / CHECKPOINT_FILE
        if not path.exists():
            return False
        if not resume:
            raise CheckpointError(
                f"{path} already exists. Pass resume=True (--resume) to continue that run, or choose another output directory."
            )
        saved = read_checkpoint(path, CHECKPOINT_VERSION)
        differences = _differences(saved["identity"], self.identity())
        if differences:
            raise CheckpointError(
                f"The checkpoint {path} is from a different run; it differs in: " + "; ".join(differences)
                + ". Use the same options to resume, or another output directory to start over."
            )
        problem = self._consistency_problem(saved)
        if problem:
            raise CheckpointError(f"The checkpoint {path} is not usable: {problem}. It was damaged or edited; delete it to start over.")
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
        except LocalgradError as exc:
            raise CheckpointError(f"The checkpoint {path} holds an unusable optimizer state: {exc}") from exc
        self.system_prompt.set_value(saved["prompt"])
        self.initial = saved["initial"]
        self.records = list(saved["records"])
        self.pool = [Scored(e["prompt"], list(e["val"]), e["step"]) for e in saved["pool"]]
        self.best = saved["best"]
        return True

    def _consistency_problem(self, saved: dict[str, Any]) -> str | None:
        """What in a schema-valid checkpoint contradicts itself or this run's data, as a sentence."""
        pool, best, records = saved["pool"], saved["best"], saved["records"]
        if not pool or not 0 <= best < len(pool):
            return f"best = {best} does not index its {len(pool)} scored prompts"
        if any(len(e["val"]) != len(self.val_set) or not set(e["val"]) <= {0, 1} for e in pool):
            return f"a scored prompt's validation results are not {len(self.val_set)} zeros and ones"
        if saved["prompt"] != pool[best]["prompt"]:
            return "its prompt is not its best scored prompt"
        if [r["step"] for r in records] != list(range(1, len(records) + 1)):
            return "its records are not steps 1, 2, ... in order"
        if len(saved["optimizer"]["memory"]) != 1:
            return "its optimizer state is not for one parameter"
        proposals = saved["optimizer"].get("proposals", 0)
        if isinstance(proposals, bool) or not isinstance(proposals, int) or proposals < 0:
            return f"its optimizer's proposal count is {proposals!r}, not an int >= 0"
        return None


def _covers(a: Sequence[int], b: Sequence[int]) -> bool:
    """True when `a` is at least as good as `b` on every example (so `b` adds nothing to a frontier)."""
    return all(x >= y for x, y in zip(a, b))


def _engine_identity(engine: Engine) -> dict[str, Any]:
    s = engine.sampling
    return {"name": engine.model_string, "temperature": s.temperature, "max_tokens": s.max_tokens, "top_p": s.top_p, "seed": s.seed}


def _differences(saved: Any, current: Any, where: str = "") -> list[str]:
    """Human-readable paths where two nested plain values differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            out += _differences(saved.get(key, "<missing>"), current.get(key, "<missing>"), f"{where}.{key}" if where else key)
        return out
    if saved != current:
        return [f"{where}: checkpoint has {saved!r}, this run has {current!r}"]
    return []


__all__ = [
    "StepOutcome", "Trainer", "TrainerConfig", "epoch_order", "fingerprint", "plot_scores", "write_json_atomic",
]
