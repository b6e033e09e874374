"""Prompts of Textual Gradient Descent: rewrite a variable from its feedback, in tags."""

OPTIMIZER_SYSTEM_PROMPT = (
    "You improve text using feedback. Reply with the improved text only, "
    "between {start_tag} and {end_tag}."
)

UPDATE_REQUEST = (
    "Improve the {role} below using the feedback.\n\n"
    "<VARIABLE>\n{value}\n</VARIABLE>\n\n"
    "<FEEDBACK>\n{feedback}\n</FEEDBACK>\n"
    "{extras}\n"
    "Write the improved {role} between {start_tag} and {end_tag}."
)

FEEDBACK_WITH_CONTEXT = "{feedback}\n(Context: {context})"

CONSTRAINTS_BLOCK = "\nThe new text must follow these rules:\n{constraints}\n"
CONSTRAINT_LINE = "- {constraint}"

MEMORY_BLOCK = "\nEarlier versions and the feedback they got:\n{entries}\n"
MEMORY_ENTRY = "<PAST_VERSION>\n{value}\n</PAST_VERSION>\n<PAST_FEEDBACK>\n{feedback}\n</PAST_FEEDBACK>"

EXAMPLES_BLOCK = "\nExamples of good text:\n{examples}\n"
EXAMPLE_LINE = "<EXAMPLE>\n{example}\n</EXAMPLE>"
