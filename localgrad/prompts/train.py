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
