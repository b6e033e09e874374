"""textgrad's `textgrad.autograd.reduce_prompts` path. localgrad's `aggregate` passes the feedback on to every
part, as `sum` does, instead of asking a model to summarize it, so it has no reduce prompt."""
