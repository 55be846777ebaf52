"""The `calculator` agent: arithmetic, math functions and statistics over numbers.

A task says what to compute in one of four ways (giving two of the payload forms is an error):

    {"expression": "2*(3+4)^2"}                      → {"expression": ..., "value": 98}
    {"expressions": ["1+1", "sqrt(16)"]}             → {"values": [2, 4]}
    {"operation": "mean", "numbers": [1, 2, 3]}      → {"operation": "mean", "value": 2, "count": 3}
    {} with a description like "What is 15% of 240?" → {"expression": "(15*240/100)", "value": 36}

Expressions are evaluated by `expression.evaluate` (no `eval`; see there for the language and its
bounds). Descriptions are read by rewriting a modest set of English phrasings ("12 times 7", "square
root of 144", "add 3, 4 and 5", "15% of 240", "log base 2 of 1024") into that language, then taking
the longest computable stretch of the text. Bad input is `InvalidTaskInput` naming what was wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from actors.agent import Agent, invalid, json_type
from actors.agents.expression import CONSTANTS, FUNCTIONS, Number, apply_function, evaluate
from actors.errors import InvalidTaskInput
from storage.messages import AgentSpec, AgentTask, Resources

MAX_EXPRESSIONS = 1000

NUMBER_OPERATIONS = ("sum", "product", "mean", "median", "min", "max", "stdev", "variance")

# Atomic and anchored to the start of a number, so no pattern backtracks through a long digit run.
_NUMBER = r"(?<![0-9.])-?(?>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?>e[+-]?[0-9]+)?"
_OPERAND = rf"(?:{_NUMBER}|\([^()]*\)|\bpi\b|\btau\b)"
_LIST = rf"{_NUMBER}(?:(?:\s*,\s*(?:and\s+)?|\s+and\s+){_NUMBER})+"

_LIST_FUNCTIONS = {
    "sum": "sum", "total": "sum", "average": "mean", "mean": "mean", "median": "median",
    "product": "product", "minimum": "min", "min": "min", "maximum": "max", "max": "max",
    "standard deviation": "stdev", "stdev": "stdev", "variance": "variance", "gcd": "gcd",
    "greatest common divisor": "gcd", "lcm": "lcm", "least common multiple": "lcm",
}
_NAMED_FUNCTIONS = ("sqrt|cbrt|ln|log10|log2|log|sin|cos|tan|asin|acos|atan|sinh|cosh|tanh|exp"
                    "|factorial|abs|floor|ceil")
_OPERATION_WORDS = {
    "mean": r"\b(?:mean|average)\b", "sum": r"\b(?:sum|total|add)\b", "median": r"\bmedian\b",
    "min": r"\b(?:min|minimum|smallest|lowest)\b", "max": r"\b(?:max|maximum|largest|highest)\b",
    "stdev": r"\b(?:stdev|standard deviation)\b", "variance": r"\bvariance\b",
    "product": r"\b(?:product|multiply)\b",
}


def _numbers_of(text: str) -> list[str]:
    return re.findall(_NUMBER, text)


def _list_function(match: re.Match[str]) -> str:
    function = _LIST_FUNCTIONS[" ".join(match.group(1).split())]
    return f"{function}({', '.join(_numbers_of(match.group(2)))})"


def _joined(operator: str) -> Callable[[re.Match[str]], str]:
    return lambda match: "(" + f" {operator} ".join(_numbers_of(match.group(1))) + ")"


Replacement = str | Callable[[re.Match[str]], str]
_REWRITE_RULES: list[tuple[str, Replacement]] = [
    (rf"√\s*({_OPERAND})", r"sqrt(\1)"),
    (rf"\b(?:the\s+)?square\s+root\s+of\s+({_OPERAND})", r"sqrt(\1)"),
    (rf"\b(?:the\s+)?cube\s+root\s+of\s+({_OPERAND})", r"cbrt(\1)"),
    (rf"\b(?:the\s+)?absolute\s+value\s+of\s+({_OPERAND})", r"abs(\1)"),
    (rf"\b(?:the\s+)?natural\s+log(?:arithm)?\s+of\s+({_OPERAND})", r"ln(\1)"),
    (rf"\blog(?:arithm)?\s+(?:to\s+the\s+)?base\s+({_NUMBER})\s+of\s+({_OPERAND})", r"log(\2, \1)"),
    (rf"\b(?:the\s+)?({_NAMED_FUNCTIONS})\s+(?:of\s+)?({_OPERAND})", r"\1(\2)"),
    (rf"({_OPERAND})\s+factorial\b", r"factorial(\1)"),
    (rf"({_NUMBER})\s*(?:%|percent|per\s+cent)\s+of\s+({_OPERAND})", r"(\1*\2/100)"),
    (rf"({_NUMBER})\s+degrees?\s+(?:to|in|into)\s+radians\b", r"radians(\1)"),
    (rf"({_NUMBER})\s+radians?\s+(?:to|in|into)\s+degrees\b", r"degrees(\1)"),
    (rf"({_NUMBER})\s+choose\s+({_NUMBER})", r"comb(\1, \2)"),
    (rf"\bchoose\s+({_NUMBER})\s+(?:from|out\s+of)\s+({_NUMBER})", r"comb(\2, \1)"),
    (rf"({_OPERAND})\s+squared\b", r"(\1)^2"),
    (rf"({_OPERAND})\s+cubed\b", r"(\1)^3"),
    (rf"(?<!\s)\s++to\s+the\s+({_NUMBER})(?:st|nd|rd|th)\s+power\b", r" ^ \1"),
    (r"(?<!\s)\s++(?:raised\s+)?to\s+the\s+power\s+(?:of\s+)?", " ^ "),
    (r"(?<!\s)\s++raised\s+to\s+", " ^ "),
    (rf"\b(?:the\s+)?({'|'.join(_LIST_FUNCTIONS)})\s+of\s+(?:the\s+)?(?:numbers\s+)?({_LIST})",
     _list_function),
    (rf"\b(?:the\s+)?difference\s+between\s+({_OPERAND})\s+and\s+({_OPERAND})", r"(\1 - \2)"),
    (rf"\bremainder\s+(?:of|when)\s+({_OPERAND})\s+(?:is\s+)?divided\s+by\s+({_OPERAND})",
     r"(\1 % \2)"),
    (rf"\badd\s+(?:up\s+)?({_LIST})", _joined("+")),
    (rf"\badd\s+({_OPERAND})\s+to\s+({_OPERAND})", r"(\2 + \1)"),
    (rf"\bsubtract\s+({_OPERAND})\s+from\s+({_OPERAND})", r"(\2 - \1)"),
    (rf"\bmultiply\s+({_OPERAND})\s+(?:by|with|times)\s+({_OPERAND})", r"(\1 * \2)"),
    (rf"\bmultiply\s+({_LIST})", _joined("*")),
    (rf"\bdivide\s+({_OPERAND})\s+by\s+({_OPERAND})", r"(\1 / \2)"),
    (rf"\bdivide\s+({_OPERAND})\s+into\s+({_OPERAND})", r"(\2 / \1)"),
    (r"(?<=[\d)])\s*x\s*(?=[\d(])", " * "),
    (r"\bmultiplied\s+by\b|\btimes\b", "*"),
    (r"\bdivided\s+by\b", "/"),
    (r"\bplus\b", "+"),
    (r"\bminus\b", "-"),
    (r"\bmod(?:ulo)?\b", "%"),
    (r"\bnegative\s+", "-"),
]
_REWRITES: list[tuple[re.Pattern[str], Replacement]] = [
    (re.compile(pattern), replacement) for pattern, replacement in _REWRITE_RULES]

_SYMBOLS = str.maketrans({"×": "*", "·": "*", "∙": "*", "÷": "/", "−": "-", "–": "-", "²": "^2",
                          "³": "^3", "$": None, "€": None, "£": None, "¥": None})
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d.])")
_KNOWN_NAMES = frozenset(FUNCTIONS) | frozenset(CONSTANTS)
_PIECE = re.compile(
    r"(?P<number>(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:e[+-]?[0-9]+)?)|(?P<name>[a-z_][a-z0-9_]*)"
    r"|(?P<operator>\*\*|//|[-+*/%^])|(?P<punctuation>[(),])|(?P<space>\s+)|(?P<other>.)", re.S)


def rewrite_english(description: str) -> str:
    """The description with the English phrasings this agent knows replaced by expression syntax."""
    text = description.lower().translate(_SYMBOLS)
    if "(" not in text:
        text = _THOUSANDS.sub(lambda match: match.group().replace(",", ""), text)
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text


def _runs(text: str) -> Iterator[list[re.Match[str]]]:
    """Maximal stretches of `text` made only of pieces an expression can contain."""
    run: list[re.Match[str]] = []
    for piece in _PIECE.finditer(text):
        if piece.lastgroup == "other" or (
                piece.lastgroup == "name" and piece.group() not in _KNOWN_NAMES):
            yield run
            run = []
        elif piece.lastgroup != "space":
            run.append(piece)
    yield run


def expression_from_description(description: str) -> str | None:
    """The longest stretch of the (rewritten) description that reads as a computation, if any."""
    text = rewrite_english(description)
    best, best_size = "", 0
    for pieces in _runs(text):
        while pieces and pieces[-1].group() == ",":
            pieces.pop()
        while pieces and pieces[0].group() == ",":
            pieces.pop(0)
        kinds = {piece.lastgroup for piece in pieces}
        computable = "name" in kinds or {"number", "operator"} <= kinds
        if computable and len(pieces) > best_size:
            best, best_size = text[pieces[0].start():pieces[-1].end()], len(pieces)
    return best or None


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _with_context(exc: InvalidTaskInput, prefix: str, suffix: str,
                  **details: Any) -> InvalidTaskInput:
    """`exc` again, its message wrapped so it says which input it is about."""
    return type(exc)(f"{prefix}{exc.message}{suffix}", {**exc.details, **details})


def evaluate_one(expression: Any) -> dict[str, Any]:
    """Payload {"expression": "2*(3+4)"}."""
    if not isinstance(expression, str):
        raise invalid(f"payload 'expression' must be a string like \"2*(3+4)\", got "
                      f"{json_type(expression)}", field="expression")
    return {"expression": expression, "value": evaluate(expression)}


def evaluate_many(expressions: Any) -> dict[str, Any]:
    """Payload {"expressions": [...]}: every value, or the first error, named by its index."""
    if not isinstance(expressions, list):
        raise invalid(f"payload 'expressions' must be a list of strings, got "
                      f"{json_type(expressions)}", field="expressions")
    if len(expressions) > MAX_EXPRESSIONS:
        raise invalid(f"payload 'expressions' has {len(expressions)} items; at most "
                      f"{MAX_EXPRESSIONS}", field="expressions", limit=MAX_EXPRESSIONS)
    values: list[Number] = []
    for index, expression in enumerate(expressions):
        if not isinstance(expression, str):
            raise invalid(f"payload 'expressions'[{index}] must be a string, got "
                          f"{json_type(expression)}", field="expressions", index=index)
        try:
            values.append(evaluate(expression))
        except InvalidTaskInput as exc:
            raise _with_context(exc, f"expressions[{index}]: ", "", index=index) from exc
    return {"values": values}


def _operation_from(description: str) -> str:
    named = [name for name, pattern in _OPERATION_WORDS.items()
             if re.search(pattern, description, re.IGNORECASE)]
    if len(named) != 1:
        mentioned = f" (the description mentions {', '.join(named)})" if named else ""
        raise invalid(f"payload 'numbers' needs an 'operation': one of "
                      f"{', '.join(NUMBER_OPERATIONS)}{mentioned}", field="operation",
                      accepted=list(NUMBER_OPERATIONS))
    return named[0]


def _number_list(value: Any) -> list[Number]:
    if not isinstance(value, list):
        raise invalid(f"payload 'numbers' must be a list of numbers, got {json_type(value)}",
                      field="numbers")
    for index, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise invalid(f"payload 'numbers'[{index}] is {json_type(number)} "
                          f"({_preview(number)}); every item must be a JSON number, not a "
                          "string or boolean", field="numbers", index=index)
        if isinstance(number, float) and not math.isfinite(number):
            raise invalid(f"payload 'numbers'[{index}] is not a finite number",
                          field="numbers", index=index)
    return value


def compute_over_numbers(payload: dict[str, Any], description: str) -> dict[str, Any]:
    """Payload {"operation": "mean", "numbers": [...]}; the operation may come from the
    description ("the average of these") when the payload has none."""
    numbers = _number_list(payload["numbers"])
    operation = payload.get("operation")
    if operation is None:
        operation = _operation_from(description)
    if not isinstance(operation, str) or operation.strip().lower() not in NUMBER_OPERATIONS:
        raise invalid(f"unknown operation {_preview(operation)}; accepted: "
                      f"{', '.join(NUMBER_OPERATIONS)}", field="operation",
                      accepted=list(NUMBER_OPERATIONS))
    operation = operation.strip().lower()
    minimum = FUNCTIONS[operation].min_args
    if len(numbers) < minimum:
        raise invalid(f"operation {operation!r} needs at least {minimum} "
                      f"number{'s' if minimum > 1 else ''} in payload 'numbers', got "
                      f"{len(numbers)}", field="numbers")
    value = apply_function(operation, numbers)
    return {"operation": operation, "value": value, "count": len(numbers)}


def evaluate_description(description: str) -> dict[str, Any]:
    """A task with only a description: the computation written in it, and its value."""
    expression = expression_from_description(description)
    if expression is None:
        raise invalid("no arithmetic expression was found in the description; pass one in "
                      "payload 'expression' (for example {\"expression\": \"2*(3+4)\"}), or a "
                      "list of 'numbers' with an 'operation'", field="description")
    try:
        value = evaluate(expression)
    except InvalidTaskInput as exc:
        raise _with_context(exc, "", f" (in {expression!r}, read from the description)",
                            expression=expression) from exc
    return {"expression": expression, "value": value}


class Calculator(Agent):
    """Arithmetic and math functions over numbers in the payload or written in the description."""

    spec = AgentSpec(
        name="calculator",
        description="Evaluates arithmetic and math expressions (powers, roots, logarithms, "
        "trigonometry, factorials, percentages) and statistics over lists of numbers, given as an "
        "expression, a list of numbers, or a question in plain English.",
        capabilities=(
            "evaluate arithmetic expressions with parentheses and powers",
            "percentages and percent-of calculations",
            "square roots, powers, exponentials and logarithms",
            "trigonometry in radians, degree and radian conversion",
            "mean, median, standard deviation and variance of numbers",
            "factorials, combinations, permutations, gcd and lcm",
            "answer arithmetic questions written in plain English",
            "word problems with prices, discounts, tips, interest and unit conversions",
            "bare numeric expressions such as 17 * 23 or (4 + 6) / 5",
        ),
        examples=(
            "What is 15% of 240?",
            "calculate 2^10 + 5",
            "What's the square root of 144?",
            "what is 12 times 7",
            "divide 100 by 8",
            "add 3, 4 and 5",
            "Evaluate sqrt(2) * (3 + 4.5)",
            "How much is 18 percent of 1250?",
            "Compute the average of 4, 8, 15, 16, 23 and 42",
            "What is 7 factorial?",
            "solve 3.5 * (2 - 0.75) / 4",
            "convert 90 degrees to radians",
            "what's 2 to the power of 16",
            "standard deviation of 2, 4, 4, 4, 5, 5, 7, 9",
            "How many ways are there to choose 3 out of 10?",
            "log base 2 of 1024",
            "sin(pi/6) + cos(pi/3)",
            "what is 5 squared plus 12 squared",
            "find the gcd of 48 and 180",
            "subtract 17 from 250",
            "multiply 6.5 by 4",
            "What is 1e6 / 3?",
            "What's the remainder when 17 is divided by 5?",
            "what is 250 minus 37",
            "17 * 23",
            "(8 + 12) / 4",
            "how much is 12.5% of 80",
            "what's 75 * 1.2 - 10",
            "A jacket costs 80 dollars and is 25% off: what's 80 - 25% of 80?",
            "compound interest: 1000 * (1 + 0.05)^10",
            "how many hours are in 3 weeks? 3 * 7 * 24",
            "what is 52000 / 12",
            "cube root of 343",
            "natural logarithm of 10",
            "e^2",
            "tan(pi/4)",
            "10 choose 3",
            "lcm of 4, 6 and 10",
            "median of 5, 1, 9 and 3",
            "variance of 2, 4, 6, 8",
            "mean of 88, 92 and 79",
            "sum of 1.5, 2.25 and 3.75",
            "round(2/3, 4)",
            "13 squared",
            "9 to the power of 3",
            "pi * 4^2",
            "absolute value of -42",
            "quick maths: 48 divided by 6",
            "compute the product of 3, 7 and 11",
            "how much is 3 plus 4 times 2",
            "what is 15 percent of 80",
            "19 * 3 + 7",
            "3 items at 4.99 each: 3 * 4.99",
        ),
        resources=Resources(num_cpus=0.1),
        concurrency=8,
        replicas=2,
        payload_hint={"expression": "(120 + 80) * 1.2"},
    )

    async def run(self, task: AgentTask) -> dict[str, Any]:
        payload = task.payload
        forms = [key for key in ("expression", "expressions", "numbers") if key in payload]
        if len(forms) > 1:
            raise invalid(f"payload gives {' and '.join(map(repr, forms))}; give only one of "
                          "'expression', 'expressions' or 'numbers' (with 'operation')",
                          fields=forms)
        if "expression" in payload:
            return evaluate_one(payload["expression"])
        if "expressions" in payload:
            return evaluate_many(payload["expressions"])
        if "numbers" in payload:
            return compute_over_numbers(payload, task.description or "")
        if "operation" in payload:
            raise invalid("payload 'operation' needs a list of 'numbers' to work on",
                          field="numbers")
        return evaluate_description(task.description or "")
