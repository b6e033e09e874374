"""Prompts that turn an output's evaluation (or feedback) into feedback for one of its inputs."""

BACKWARD_SYSTEM_PROMPT = (
    "You are part of an optimization system. You give short, specific, critical feedback "
    "on one piece of text so that it can be improved. You do not rewrite it yourself."
)

# A language model call, shown to the feedback model.
LLM_CALL_CONVERSATION = (
    "<SYSTEM_PROMPT>\n{system_prompt}\n</SYSTEM_PROMPT>\n"
    "<INPUT>\n{input}\n</INPUT>\n"
    "<OUTPUT>\n{output}\n</OUTPUT>"
)

# The output is the objective itself (an evaluation, a loss).
OBJECTIVE_IS_OUTPUT = "The OUTPUT above is an evaluation. Our only goal is to improve what it evaluates."

# The output was used further on and received feedback there.
OBJECTIVE_FROM_FEEDBACK = (
    "The OUTPUT above was then used as {output_role}, and got this feedback:\n"
    "<FEEDBACK>\n{output_feedback}\n</FEEDBACK>"
)

LLM_CALL_SOURCE = "A language model call"
FUNCTION_SOURCE = "A Python function call"

# The variable to give feedback on, when it is not already shown verbatim in the conversation.
VARIABLE_BLOCK = "\n\nThe {role} is:\n<VARIABLE>\n{value}\n</VARIABLE>"

FEEDBACK_REQUEST = (
    "{source}:\n{conversation}{variable}\n\n"
    "{objective}\n\n"
    "Give feedback on the {role}. In two or three sentences, say what is wrong with it and how to fix it."
)

# A Python function (string-based function) shown to the feedback model.
FUNCTION_CONVERSATION = (
    "Function purpose: {purpose}\n"
    "<INPUTS>\n{inputs}\n</INPUTS>\n"
    "<OUTPUT>\n{output}\n</OUTPUT>"
)

FUNCTION_INPUT_LINE = "{name} ({role}): {value}"
