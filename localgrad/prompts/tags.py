"""The names of the tags localgrad's prompts write around the text they show (`<VARIABLE>`, `</VARIABLE>`, ...).

Text shown between these tags is escaped (`localgrad.protocol`), and an optimizer's new value may not hold them.
"""

TAG_NAMES = (
    "VARIABLE",
    "FEEDBACK",
    "IMPROVED_VARIABLE",
    "PAST_VERSION",
    "PAST_FEEDBACK",
    "EXAMPLE",
    "SYSTEM_PROMPT",
    "INPUT",
    "INPUTS",
    "OUTPUT",
    "FINAL",
    "ACCURACY",
)
