"""Tutorial 3, optimizing a code snippet with a loss of your own: the code runs against tests
(a string-based function), an LLM reviews code and results together, and TGD rewrites the code.

Run: python examples/03_code_optimization.py [--engine embedded] [--steps 2]
"""
import argparse

import localgrad as tg

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--engine", default="embedded", help="any localgrad engine name")
parser.add_argument("--steps", type=int, default=2)
args = parser.parse_args()

engine = tg.get_engine(args.engine, max_tokens=200)
tg.set_backward_engine(engine, override=True)

problem = tg.Variable(
    "Write a Python function longest_run(s) returning the length of the longest run of one repeated character.",
    role_description="coding problem",
    requires_grad=False,
)
code = tg.Variable(
    "def longest_run(s):\n    best = 1\n    for i in range(1, len(s)):\n        if s[i] == s[i - 1]:\n            best += 1\n    return best",
    role_description="Python code solving the problem",
    requires_grad=True,
)
TESTS = [("aabbbc", 3), ("", 0), ("abc", 1), ("aaaa", 4)]


def run_tests(code: tg.Variable) -> str:
    """Execute the code on the tests; report each result (this is the non-LLM part of the loss)."""
    scope: dict = {}
    try:
        exec(code.value, scope)
        results = []
        for arg, want in TESTS:
            got = scope["longest_run"](arg)
            results.append(f"longest_run({arg!r}) = {got!r}, expected {want!r}: {'pass' if got == want else 'FAIL'}")
        return "\n".join(results)
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


test_runner = tg.StringBasedFunction(run_tests, "runs the code on unit tests and reports pass/fail")
review = tg.FormattedLLMCall(
    engine,
    "Problem: {problem}\nCode:\n{code}\nTest results:\n{results}\nName the bug that makes tests fail, in one sentence.",
    ["problem", "code", "results"],
    system_prompt="You are a careful code reviewer.",
)
optimizer = tg.TGD([code], constraints=["Return only valid Python code defining longest_run(s)."])

for step in range(args.steps):
    optimizer.zero_grad()
    results = test_runner({"code": code})
    print(f"--- step {step + 1}\n{results.value}")
    loss = review({"problem": problem, "code": code, "results": results})
    print("review:", loss.value)
    loss.backward()
    optimizer.step()
    print("code:\n" + code.value)
print("final tests:\n" + run_tests(code))
