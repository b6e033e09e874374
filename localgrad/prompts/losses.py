"""System prompts and templates of the built-in losses."""

EVALUATION_SYSTEM_PROMPT = "You are an evaluation system that compares the given fields."

MULTI_FIELD_LINE = "**{name}**: {{{field}}}"

TEST_TIME_SYSTEM_PROMPT = (
    "You evaluate an answer to a multiple-choice question. Do not solve the question. "
    "Point out mistakes in the reasoning and the answer, briefly and critically."
)

TEST_TIME_TEMPLATE = "{instruction}\nQuestion: {{question}}\nAnswer by the language model: {{prediction}}"

IMAGE_QA_SYSTEM_PROMPT = "You are an evaluation system that evaluates answers to questions about images."
