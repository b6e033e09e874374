"""textgrad's `textgrad.autograd.multimodal_backward_prompts` path. localgrad's multimodal calls reuse its text
feedback prompts (`localgrad.prompts.backward`) and send the images along; their labels are in
`localgrad.prompts.multimodal`."""
