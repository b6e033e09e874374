"""textgrad's `textgrad.autograd.reduce_prompts` path. localgrad's `aggregate` hands every part the whole
numbered feedback instead of asking a model to summarize it, so it has no reduce prompt."""
