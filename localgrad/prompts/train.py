"""Prompts of the training loop: the starting system prompt, the evaluation function's purpose, roles."""

# textgrad's prompt-optimization tutorial starts from this instruction; it fixes the answer format.
INITIAL_SYSTEM_PROMPT = (
    "You will answer a reasoning question. Think step by step. The last line of your response "
    "should be of the following format: 'Answer: $VALUE' where VALUE is a numerical value."
)

SYSTEM_PROMPT_ROLE = "structured system prompt to a somewhat capable language model that specifies the behavior and strategies for the QA task"

QUESTION_ROLE = "query to the language model"
ANSWER_ROLE = "correct answer for the query"

# Shown to the feedback model as what the exact-match function does.
EXACT_MATCH_PURPOSE = (
    "The runtime of string-based function that checks if the prediction is correct: "
    "1 when the final number of the prediction equals the correct answer, else 0."
)

# How each answer format is asked for (the model's side) and read (the feedback model's side).
# The number instruction is textgrad's BBH / GSM8k task description, word for word in its format part.
NUMBER_INSTRUCTION = "The last line of your response should be of the following format: 'Answer: $VALUE' where VALUE is a numerical value."
CHOICE_INSTRUCTION = "The last line of your response should be of the following format: 'Answer: $CHOICE' where CHOICE is one of: {choices}."
TEXT_INSTRUCTION = "The last line of your response should be of the following format: 'Answer: $TEXT' where TEXT is the answer alone."

NUMBER_PURPOSE = (
    "The runtime of string-based function that checks if the prediction is correct: it reads the number after "
    "the last 'Answer:' in the prediction (the last number anywhere when there is no 'Answer:') and returns 1 "
    "when it equals the correct answer, else 0."
)
CHOICE_PURPOSE = (
    "The runtime of string-based function that checks if the prediction is correct: it reads which of the "
    "allowed choices follows the last 'Answer:' in the prediction (the last choice named anywhere when there is "
    "no 'Answer:') and returns 1 when it is the correct answer, else 0."
)
TEXT_PURPOSE = (
    "The runtime of string-based function that checks if the prediction is correct: it takes the line after "
    "the last 'Answer:' in the prediction and returns 1 when it equals the correct answer (ignoring case, "
    "spacing and end punctuation), else 0."
)

# The starting prompt for a task whose answers are not numbers (the number format keeps INITIAL_SYSTEM_PROMPT).
INITIAL_PROMPT_BY_FORMAT = {
    "number": INITIAL_SYSTEM_PROMPT,
    "choice": "You will answer a reasoning question. Think step by step. End with the line 'Answer: ' followed by one of the allowed choices.",
    "text": "You will answer a reasoning question. Think step by step. End with the line 'Answer: ' followed by your answer.",
}

CHOICES_ROLE = "the allowed answers"
