"""Tutorial 1, textgrad's primitives on a local engine: Variable, an LLM call, a loss, backward, a TGD step.

Run: python examples/01_primitives.py [--engine embedded]
"""
import argparse

import localgrad as tg

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--engine", default="embedded", help="any localgrad engine name")
args = parser.parse_args()

engine = tg.get_engine(args.engine, max_tokens=160)
tg.set_backward_engine(engine, override=True)

# A variable is a piece of text with a role; requires_grad=True means the optimizer may change it.
punchline = tg.Variable("Because it was tired.", role_description="punchline of a joke", requires_grad=True)
setup = tg.Variable("Why did the bicycle fall over?", role_description="setup of a joke", requires_grad=False)

# A formatted LLM call combines several variables into one prompt; the output remembers its inputs.
rate = tg.FormattedLLMCall(engine, "Joke: {setup} {punchline}\nIs it funny? Answer in one sentence.", ["setup", "punchline"])
evaluation = rate({"setup": setup, "punchline": punchline})
print("evaluation:", evaluation.value)

# backward() asks the engine how each input should change; the feedback lands on the inputs that require grad.
evaluation.backward()
print("feedback on the punchline:", punchline.get_gradient_text())
print("the setup got no feedback:", setup.gradients == [])

# TGD rewrites the punchline from its feedback (one batched call for all parameters).
optimizer = tg.TGD([punchline])
optimizer.step()
print("new punchline:", punchline.value)
print("engine usage:", engine.usage.to_dict())
