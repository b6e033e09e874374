"""The object-counting task, the question/answer file loader and the exact-match metric."""
import json
import re
from pathlib import Path

import pytest

from localgrad.errors import InvalidInputError
from localgrad.train.tasks import (
    ANSWER_FORMATS,
    CATEGORIES,
    NUMBER_WORDS,
    Example,
    exact_match,
    exact_match_loss,
    get_answer_format,
    infer_format,
    load_bigbench_task,
    load_examples,
    load_qa_file,
    make_object_counting,
    shuffled,
    split,
)
from localgrad.variable import Variable


def count_independently(question: str) -> int:
    """Parse 'I have a X, two Ys, and an Z. How many C do I have?' and count the C items."""
    match = re.fullmatch(r"I have (.+)\. How many (.+) do I have\?", question)
    assert match, question
    listing, category = match.groups()
    singulars = {s: c for c, items in CATEGORIES.items() for s in items}
    plurals = {p: c for c, items in CATEGORIES.items() for p in items.values()}
    total = 0
    for phrase in re.split(r", (?:and )?", listing):
        article, _, name = phrase.partition(" ")
        if article in ("a", "an"):
            assert name in singulars, phrase
            n, item_category = 1, singulars[name]
        else:
            assert article in NUMBER_WORDS[2:], phrase
            assert name in plurals, phrase
            n, item_category = NUMBER_WORDS.index(article), plurals[name]
        if item_category == category:
            total += n
    return total


def test_generation_is_deterministic_and_answers_are_right():
    first = make_object_counting(200, seed=7)
    assert first == make_object_counting(200, seed=7)
    assert first != make_object_counting(200, seed=8)
    for example in first:
        assert example.answer == str(count_independently(example.question))
    assert {re.search(r"How many (.+) do", e.question).group(1) for e in first} == set(CATEGORIES)
    assert any(re.search(r"\b(two|three|four) ", e.question) for e in first)


def test_distractors_appear_in_non_object_questions():
    examples = [e for e in make_object_counting(100, seed=1) if "objects do I have" not in e.question]
    assert examples
    distracted = 0
    for example in examples:
        category = re.search(r"How many (.+) do", example.question).group(1)
        others = {name for c, items in CATEGORIES.items() if c != category for name in (*items, *items.values())}
        distracted += any(re.search(rf"\b{re.escape(name)}\b", example.question) for name in others)
    assert distracted == len(examples)


def test_split_sizes_and_errors():
    examples = make_object_counting(10, seed=0)
    train, val, test = split(examples, 5, 3, 2)
    assert (train, val, test) == (examples[:5], examples[5:8], examples[8:])
    with pytest.raises(InvalidInputError, match="only 10"):
        split(examples, 5, 5, 1)
    with pytest.raises(InvalidInputError, match="val"):
        split(examples, 1, -1, 1)


def test_load_json_and_jsonl(tmp_path):
    rows = [{"question": "How many?", "answer": 3}, {"question": "And now?", "answer": "4"}]
    json_file = tmp_path / "qa.json"
    json_file.write_text(json.dumps(rows))
    jsonl_file = tmp_path / "qa.jsonl"
    jsonl_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    expected = [Example("How many?", "3"), Example("And now?", "4")]
    assert load_qa_file(json_file) == expected
    assert load_qa_file(jsonl_file) == expected
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"input": "Q", "target": "7"}))
    assert load_qa_file(other, question_key="input", answer_key="target") == [Example("Q", "7")]


def test_load_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        load_qa_file(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\n{"question": "b", "answer": \n')
    with pytest.raises(InvalidInputError, match="line 2"):
        load_qa_file(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[\n {"question": "a", "answer": "1"},\n {"question": }\n]')
    with pytest.raises(InvalidInputError, match="line 3"):
        load_qa_file(bad_json)
    keys = tmp_path / "keys.jsonl"
    keys.write_text('{"question": "a", "answer": "1"}\n{"question": "b"}\n')
    with pytest.raises(InvalidInputError, match=r"line 2: missing key\(s\) \['answer'\]"):
        load_qa_file(keys)
    not_object = tmp_path / "list.jsonl"
    not_object.write_text("[1, 2]\n")
    with pytest.raises(InvalidInputError, match="expected a JSON object"):
        load_qa_file(not_object)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InvalidInputError, match="no question/answer pairs"):
        load_qa_file(empty)


@pytest.mark.parametrize(
    "prediction, answer, expected",
    [
        ("Answer: 5", "5", True),
        ("five", "5", True),
        ("I count 2 apples and 3 pears.\nAnswer: $5$", "5", True),
        ("The answer is twenty-one.", "21", True),
        ("Answer: 7.0", "7", True),
        ("Answer: 6", "5", False),
        ("There are 5 fruits in total. Answer: 4", "5", False),
        ("no number here", "5", False),
        ("", "5", False),
        ("Answer: 1,200", "1200", True),
        ("She sold 72 clips.\nAnswer: 72", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", True),
        ("Answer: 24", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", False),
    ],
)
def test_exact_match(prediction, answer, expected):
    assert exact_match(prediction, answer) is expected


def test_exact_match_loss_is_a_graph_node():
    prediction = Variable("So the total is eight.", role_description="prediction")
    truth = Variable("8", requires_grad=False, role_description="correct answer")
    loss_fn = exact_match_loss()
    loss = loss_fn({"prediction": prediction, "ground_truth_answer": truth})
    assert loss.value == "1"
    assert loss.predecessors == [prediction, truth]
    losses = loss_fn([{"prediction": prediction, "ground_truth_answer": truth},
                      {"prediction": Variable("9", role_description="prediction"), "ground_truth_answer": truth}])
    assert [l.value for l in losses] == ["1", "0"]


BIGBENCH = Path(__file__).parent / "fixtures" / "bigbench"


def test_bigbench_task_files_load_generative_and_multiple_choice_examples(tmp_path):
    generative = load_bigbench_task(BIGBENCH / "counting_sample.json")
    assert generative[0] == Example("I have a violin and two drums. How many musical instruments do I have?", "3")
    assert generative[2].answer == "42" and infer_format(generative).name == "number"
    choice = load_bigbench_task(BIGBENCH / "navigate_sample")
    assert choice[0].question.startswith("If you follow these instructions, do you return to the starting point?\nTake 1 step.")
    assert (choice[0].answer, choice[0].choices) == ("True", ("True", "False"))
    assert choice[1].answer == "False" and infer_format(choice).name == "choice"
    assert load_examples(BIGBENCH / "navigate_sample" / "task.json") == choice
    assert load_examples(BIGBENCH / "counting_sample.json") == generative
    assert shuffled(generative, 1) == shuffled(generative, 1) and sorted(shuffled(generative, 1), key=str) == sorted(generative, key=str)
    broken = tmp_path / "task.json"
    broken.write_text('{"name": "x"}')
    with pytest.raises(InvalidInputError, match="no 'examples' list"):
        load_bigbench_task(broken)
    broken.write_text('{"examples": [{"input": "q"}]}')
    with pytest.raises(InvalidInputError, match="example 0"):
        load_bigbench_task(broken)
    with pytest.raises(InvalidInputError, match="not found"):
        load_bigbench_task(tmp_path / "nothing")


@pytest.mark.parametrize(
    "response, answer, choices, expected",
    [
        ("Answer: False", "False", ("True", "False"), True),
        ("It is true.\nAnswer: true.", "True", ("True", "False"), True),
        ("True or false? I think false", "False", ("True", "False"), True),
        ("Answer: implausible", "plausible", ("plausible", "implausible"), False),
        ("This is plausible.", "plausible", ("plausible", "implausible"), True),
        ("Answer: (B)", "(B)", ("(A)", "(B)"), True),
        ("Answer: B", "(B)", ("(A)", "(B)"), True),
        ("Answer: a cat", "(A)", ("(A)", "(B)"), False),
        ("no idea", "True", ("True", "False"), False),
    ],
)
def test_choice_format_reads_the_choice_after_answer(response, answer, choices, expected):
    assert ANSWER_FORMATS["choice"].is_correct(response, Example("q", answer, choices)) is expected


def test_text_and_number_formats_and_their_instructions():
    text = ANSWER_FORMATS["text"]
    assert text.is_correct("Let me sort.\nAnswer: Apple Banana.\nDone", Example("q", "apple banana"))
    assert not text.is_correct("apple banana", Example("q", "apple banana"))
    number = get_answer_format("number")
    assert number.read("so eight.\nAnswer: 8", Example("q", "8")) == "8" and number.is_correct("Answer: 8", Example("q", "8"))
    assert "'Answer: $VALUE'" in number.instruction(Example("q", "8"))
    assert "one of: True, False" in ANSWER_FORMATS["choice"].instruction(Example("q", "True", ("True", "False")))
    assert "last 'Answer:'" in number.purpose and "allowed choices" in ANSWER_FORMATS["choice"].purpose
    with pytest.raises(InvalidInputError, match="Unknown answer format"):
        get_answer_format("letters")
    assert infer_format([Example("q", "yes"), Example("r", "7")]).name == "text"


def test_the_metric_node_reads_choices_and_tells_the_feedback_model_how():
    loss_fn = exact_match_loss("choice")
    assert "allowed choices" in loss_fn.function_purpose
    prediction = Variable("Answer: False", role_description="prediction")
    truth = Variable("False", requires_grad=False, role_description="correct answer")
    choices = Variable("True\nFalse", requires_grad=False, role_description="the allowed answers")
    assert loss_fn({"prediction": prediction, "ground_truth_answer": truth, "choices": choices}).value == "1"
