"""Tutorial 2, solution optimization: refine an answer at test time from an LLM's critique, several steps.

Run: python examples/02_solution_optimization.py [--engine embedded] [--steps 2]
"""
import argparse

import localgrad as tg

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--engine", default="embedded", help="any localgrad engine name")
parser.add_argument("--steps", type=int, default=2)
args = parser.parse_args()

engine = tg.get_engine(args.engine, max_tokens=200)
tg.set_backward_engine(engine, override=True)

question = (
    "A bag holds 3 red and 5 blue marbles. You take out 2 blue marbles. "
    "What fraction of the marbles left in the bag are red?"
)
solution = tg.Variable(
    "There are 8 marbles, 3 are red, so the fraction is 3/8.",
    role_description="solution to the math question",
    requires_grad=True,
)
loss_fn = tg.MultiChoiceTestTime("Check the arithmetic of this solution step by step.", engine=engine)
optimizer = tg.TGD([solution], constraints=["End with 'Answer: <fraction>'."])

for step in range(args.steps):
    optimizer.zero_grad()
    loss = loss_fn(question, solution)
    print(f"--- step {step + 1}\ncritique: {loss.value}")
    loss.backward()
    optimizer.step()
    print(f"solution: {solution.value}")
