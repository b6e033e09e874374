"""textgrad's `textgrad.optimizer.guidance_optimizer`: GuidedTextualGradientDescent.

textgrad constrained the update with the guidance library; localgrad's TGD constrains every update while
decoding on local backends, so this is TGD under textgrad's name.
"""
from localgrad.optimizer.tgd import TextualGradientDescent


class GuidedTextualGradientDescent(TextualGradientDescent):
    """TGD whose update is constrained to the tag format while decoding (as every localgrad TGD update is)."""
