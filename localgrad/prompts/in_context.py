"""Prompt pieces of LLMCall_with_in_context_examples (textgrad's planning call with worked examples)."""

EXAMPLES_BLOCK = (
    "\n\nExamples of good outputs for this kind of input (use them to judge and improve the variable):\n{examples}"
)
EXAMPLE_LINE = "<EXAMPLE>\n{example}\n</EXAMPLE>"
FINAL_TAGS = ("<FINAL>", "</FINAL>")
NO_IMPROVEMENT_NEEDED = "The plan doesn't need to be improved"
