"""Every prompt localgrad sends, as data: one module per concern (backward, optimizer, losses).

Written for small local models: short, one instruction each, the whole variable shown.
"""
