"""Prompts of textgrad's task classes (`localgrad.tasks`), in localgrad's words."""
from localgrad.prompts.train import INITIAL_SYSTEM_PROMPT

BBH_DESCRIPTION = INITIAL_SYSTEM_PROMPT
GSM8K_DESCRIPTION = (
    "You will answer a math word problem. Think step by step. The last line of your response "
    "should be of the following format: 'Answer: $VALUE' where VALUE is a number."
)
MMLU_DESCRIPTION = "You will answer a multiple-choice question. Think step by step."
MMLU_TASK_INSTRUCTION = "Pick the correct answer to a multiple-choice question from its choices."

QA_ROLES = ("Question for the task", "Ground truth answer", "Reasoning and prediction from the language model")
EQUALITY_PURPOSE = "The runtime of string-based function that checks if the prediction is correct."
ACCURACY_INSTRUCTION = (
    "Below are a question, its correct answer, and a model's reasoning with its final prediction. "
    "Is the final prediction the same as the correct answer? Reply with 1 (yes) or 0 (no) between "
    "<ACCURACY> and </ACCURACY>, e.g. <ACCURACY> 1 </ACCURACY>."
)
ACCURACY_TAGS = ("<ACCURACY>", "</ACCURACY>")

MULTICHOICE_QUERY = (
    "Answer this multiple-choice question. Think step by step, and end with a line of the form "
    "'Answer: $LETTER', where LETTER is one of ABCD.\n\n{question}\n\nA) {a}\nB) {b}\nC) {c}\nD) {d}"
)
MULTICHOICE_TEST_TIME = (
    "Below are a multiple-choice question and an answer to it. Check the reasoning step by step, "
    "using what you know, and point out any mistake in it or in the chosen answer."
)
