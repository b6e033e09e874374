"""Minibatch prompt optimization, as in textgrad's prompt-optimization tutorial, with batched execution.

Each step runs the minibatch forward as one batch, the exact-match loss, a level-batched backward and
one optimizer batch, then evaluates validation and test (one batch per split, chunked) and reverts the
prompt when validation got worse. After every step a JSON checkpoint (config, prompt, optimizer state,
data-order position, records) is replaced atomically, so `resume=True` continues at the next step.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localgrad.autograd.functional import sum as sum_variables
from localgrad.engine import Engine, Usage, get_engine
from localgrad.errors import CheckpointError, InvalidInputError, OutputParseError
from localgrad.model import BlackboxLLM
from localgrad.optimizer.tgd import TGD
from localgrad.prompts import train as P
from localgrad.train.tasks import Example, exact_match, exact_match_loss
from localgrad.variable import Variable

CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.json"
RECORDS_FILE = "records.json"
PLOT_FILE = "plot.png"
PHASES = ("forward", "loss", "backward", "step", "eval")
# Options that may change between a run and its resumption: they only say when to stop.
RESUMABLE_CHANGES = ("steps", "epochs")


@dataclass(frozen=True)
class TrainerConfig:
    """Options of a prompt-optimization run, validated when built.

    Give `steps` (minibatches in all) or `epochs` (passes over the training set); `steps` wins when
    both are set. `eval_batch_size` caps one evaluation batch (None: a whole split at once).
    """

    batch_size: int = 4
    steps: int | None = 3
    epochs: int | None = None
    seed: int = 0
    eval_batch_size: int | None = 32
    initial_prompt: str = P.INITIAL_SYSTEM_PROMPT
    prompt_role: str = P.SYSTEM_PROMPT_ROLE
    revert_on_worse_val: bool = True
    constraints: tuple[str, ...] = ()

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
        if not isinstance(self.revert_on_worse_val, bool):
            raise InvalidInputError(f"TrainerConfig.revert_on_worse_val must be True or False, got {self.revert_on_worse_val!r}.")
        if self.eval_batch_size is not None:
            _positive("eval_batch_size", self.eval_batch_size)
        for name in ("initial_prompt", "prompt_role"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise InvalidInputError(f"TrainerConfig.{name} must be a non-empty string.")
        rules = (self.constraints,) if isinstance(self.constraints, str) else self.constraints
        if not isinstance(rules, (list, tuple)) or not all(isinstance(c, str) for c in rules):
            raise InvalidInputError(f"TrainerConfig.constraints must be a str or a list of str, got {self.constraints!r:.80}.")
        object.__setattr__(self, "constraints", tuple(rules))

    def total_steps(self, train_size: int) -> int:
        """How many optimization steps this config asks for on a training set of `train_size`."""
        if self.steps is not None:
            return self.steps
        return self.epochs * math.ceil(train_size / self.batch_size)  # type: ignore[operator]


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"TrainerConfig.{name} must be a positive int, got {value!r}.")


@dataclass
class StepOutcome:
    """What one training step produced: the responses, the losses and the feedback the prompt received."""

    responses: list[str]
    losses: list[str]
    prompt_feedback: list[str]
    proposed_prompt: str
    update_error: str | None = None


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
        self.seconds = time.perf_counter() - self._started
        for engine, before in zip(self.engines, self._before):
            self.usage = self.usage + (engine.usage - before)


def fingerprint(examples: Sequence[Example]) -> str:
    """A short hash of a dataset split, to tell a checkpoint's data from other data."""
    digest = hashlib.sha256(json.dumps([[e.question, e.answer] for e in examples]).encode("utf-8"))
    return digest.hexdigest()[:16]


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def epoch_order(seed: int, epoch: int, train_size: int) -> list[int]:
    """The training examples' order in an epoch: a shuffle fixed by (seed, epoch)."""
    order = list(range(train_size))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def plot_scores(records: list[dict[str, Any]], initial: dict[str, Any], path: Path) -> None:
    """A PNG of validation and test score per step (step 0 is the starting prompt)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [0] + [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("val_score", "validation"), ("test_score", "test")):
        ax.plot(steps, [initial[key]] + [r[key] for r in records], marker="o", label=label)
    reverted = [r["step"] for r in records if r["reverted"]]
    if reverted:
        ax.scatter(reverted, [r["val_score"] for r in records if r["reverted"]], marker="x", color="red", zorder=3, label="reverted")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)


class Trainer:
    """Optimize a system prompt on question/answer examples with textual gradients, in batches.

    `engine` runs the forward calls; `backward_engine` (default: the same) runs feedback and updates.
    With `out_dir`, a checkpoint, the records and a plot are written there after every step.
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
            raise InvalidInputError("Trainer needs at least one validation example (it decides when to revert).")
        self.config = config
        self.train_set, self.val_set, self.test_set = list(train_set), list(val_set), list(test_set)
        self.engine = get_engine(engine)
        self.backward_engine = get_engine(backward_engine) if backward_engine is not None else self.engine
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.system_prompt = Variable(config.initial_prompt, requires_grad=True, role_description=config.prompt_role)
        self.model = BlackboxLLM(self.engine, self.system_prompt)
        self.loss_fn = exact_match_loss()
        self.optimizer = TGD([self.system_prompt], engine=self.backward_engine, constraints=list(config.constraints))
        self.records: list[dict[str, Any]] = []
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

    def evaluate(self, examples: Sequence[Example]) -> float:
        """Exact-match accuracy of the current prompt: forward batches of `eval_batch_size`, no graph kept."""
        if not examples:
            return 0.0
        chunk = self.config.eval_batch_size or len(examples)
        correct = 0
        for start in range(0, len(examples), chunk):
            part = examples[start:start + chunk]
            questions = [Variable(e.question, requires_grad=False, role_description=P.QUESTION_ROLE) for e in part]
            responses = self.model(questions)
            correct += sum(exact_match(r.value, e.answer) for r, e in zip(responses, part))
        return correct / len(examples)

    def train_step(self, batch: Sequence[Example], timings: dict[str, _Meter] | None = None) -> StepOutcome:
        """One optimization step on a minibatch: forward (one batch), loss, backward (one batch a level), update."""
        meters = timings if timings is not None else {}
        engines = self.engines
        self.optimizer.zero_grad()
        questions = [Variable(e.question, requires_grad=False, role_description=P.QUESTION_ROLE) for e in batch]
        answers = [Variable(e.answer, requires_grad=False, role_description=P.ANSWER_ROLE) for e in batch]
        with meters.setdefault("forward", _Meter(engines)):
            responses = self.model(questions)
        with meters.setdefault("loss", _Meter(engines)):
            losses = self.loss_fn([{"prediction": r, "ground_truth_answer": a} for r, a in zip(responses, answers)])
        with meters.setdefault("backward", _Meter(engines)):
            sum_variables(losses).backward(self.backward_engine)
        feedback = [g.value for g in self.system_prompt.gradients]
        error = None
        with meters.setdefault("step", _Meter(engines)):
            try:
                self.optimizer.step()
            except OutputParseError as exc:
                error = str(exc).splitlines()[0]
        return StepOutcome(
            responses=[r.value for r in responses],
            losses=[l.value for l in losses],
            prompt_feedback=feedback,
            proposed_prompt=self.system_prompt.value,
            update_error=error,
        )

    def fit(self, resume: bool = False, callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Run the configured steps (continuing a checkpoint with `resume=True`) and return the final state.

        `callback(record)` runs after each step's checkpoint is written.
        """
        from tqdm.auto import tqdm

        total = self.config.total_steps(len(self.train_set))
        if not self._restore(resume):
            with _Meter(self.engines) as meter:
                val, test = self.evaluate(self.val_set), self.evaluate(self.test_set)
            self.initial = {"prompt": self.system_prompt.value, "val_score": val, "test_score": test,
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

    def _run_step(self, index: int) -> dict[str, Any]:
        per_epoch = math.ceil(len(self.train_set) / self.config.batch_size)
        epoch, position = divmod(index, per_epoch)
        order = epoch_order(self.config.seed, epoch, len(self.train_set))
        indices = order[position * self.config.batch_size:(position + 1) * self.config.batch_size]
        previous_prompt, previous_val = self.system_prompt.value, self.current_val_score()
        started = time.perf_counter()
        meters: dict[str, _Meter] = {}
        outcome = self.train_step([self.train_set[i] for i in indices], meters)
        with meters.setdefault("eval", _Meter(self.engines)):
            if outcome.update_error is None:
                val = self.evaluate(self.val_set)
                reverted = self.config.revert_on_worse_val and val < previous_val
                if reverted:
                    self.system_prompt.set_value(previous_prompt)
                    val = previous_val
                test = self.evaluate(self.test_set) if not reverted else self._last("test_score")
            else:
                val, test, reverted = previous_val, self._last("test_score"), False
        usage = sum((meter.usage for meter in meters.values()), Usage())
        return {
            "step": index + 1,
            "epoch": epoch,
            "batch_indices": indices,
            "train_accuracy": sum(l == "1" for l in outcome.losses) / len(outcome.losses),
            "val_score": val,
            "test_score": test,
            "prompt": self.system_prompt.value,
            "proposed_prompt": outcome.proposed_prompt,
            "reverted": reverted,
            "update_error": outcome.update_error,
            "seconds": {**{p: round(meters[p].seconds, 3) for p in PHASES}, "total": round(time.perf_counter() - started, 3)},
            "batches": {p: meters[p].usage.batches for p in PHASES},
            "tokens": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens},
            "usage": usage.to_dict(),
        }

    def current_val_score(self) -> float:
        """The validation score of the prompt as it stands (after any revert)."""
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
        per_epoch = math.ceil(len(self.train_set) / self.config.batch_size)
        epoch = steps_done // per_epoch
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
            "totals": self.totals(),
        }

    def _save(self) -> None:
        if self.out_dir is None:
            return
        state = self.state()
        write_json_atomic(self.out_dir / CHECKPOINT_FILE, state)
        write_json_atomic(self.out_dir / RECORDS_FILE, {"initial": state["initial"], "records": state["records"], "totals": state["totals"]})
        plot_scores(self.records, self.initial, self.out_dir / PLOT_FILE)  # type: ignore[arg-type]

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
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"Cannot read the checkpoint {path}: {exc}. Delete it to start over.") from exc
        if not isinstance(saved, dict) or saved.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"{path} is not a localgrad trainer checkpoint of version {CHECKPOINT_VERSION}.")
        differences = _differences(saved.get("identity", {}), self.identity())
        if differences:
            raise CheckpointError(
                f"The checkpoint {path} is from a different run; it differs in: " + "; ".join(differences)
                + ". Use the same options to resume, or another output directory to start over."
            )
        self.system_prompt.set_value(saved["prompt"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.initial = saved["initial"]
        self.records = list(saved["records"])
        return True


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


__all__ = ["StepOutcome", "Trainer", "TrainerConfig", "epoch_order", "fingerprint", "plot_scores", "write_json_atomic"]
