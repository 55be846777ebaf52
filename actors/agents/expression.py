"""A small arithmetic language, parsed and evaluated here: no `eval`, nothing in the input runs.

The language: numbers (`42`, `2.5`, `.5`, `1e3`); `+ - * / // % ^ **` with the usual precedence,
where `^` and `**` both mean power and bind to the right (`2^3^2` is 512, `-2^2` is -4, `2^-1` is
0.5); unary `+`/`-`; parentheses; the constants in `CONSTANTS`; and the functions in `FUNCTIONS`,
called like `log(8, 2)`. Names are case-insensitive. Positions in messages are 0-based offsets.

What `evaluate` guarantees:
- only the operators and functions listed here can run; any other name is an error;
- work is bounded before it is done: the length, token count and nesting depth of the text, the
  size of an exponent, the digits of an integer and the magnitude of a float are checked before the
  operation that would exceed them, so `2**99999999` fails at once instead of computing;
- integer arithmetic stays exact while it can (`8/2` is 4, `7/2` is 3.5, `2^100` is exact);
- `round` rounds halves away from zero (`round(2.5)` is 3), as people do by hand;
- the result is a finite int or float (floats rounded to 15 significant digits, what a double
  holds reliably); every failure is an `ExpressionError` saying what was wrong and where.
"""

from __future__ import annotations

import decimal
import math
import re
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from actors.errors import InvalidTaskInput

Number = int | float
Arguments = Sequence[Number]

MAX_EXPRESSION_LENGTH = 1000
MAX_TOKENS = 500
MAX_DEPTH = 50
MAX_EXPONENT = 10_000
MAX_FACTORIAL = 1000
# Python will not print a longer int (sys.get_int_max_str_digits), so no JSON result could hold it.
MAX_INT_DIGITS = 4300
_MAX_INT_BITS = int(MAX_INT_DIGITS / math.log10(2))
_MAX_FLOAT_LOG10 = math.log10(sys.float_info.max)
_DECIMAL_CONTEXT = decimal.Context(prec=MAX_INT_DIGITS + 1000)

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


class ExpressionError(InvalidTaskInput):
    """An expression that cannot be parsed or evaluated; `details["position"]` points into it."""


class _Refused(Exception):
    """Raised by an operator or function; `_perform` adds where it happened and what ran."""

    def __init__(self, problem: str, detail: str = "") -> None:
        super().__init__(problem, detail)
        self.problem = problem
        self.detail = detail


def _fail(message: str, position: int | None = None, **details: Any) -> NoReturn:
    if position is not None:
        details["position"] = position
    raise ExpressionError(message, details)


def _show(value: Number) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "name", "operator" or "end"
    text: str
    position: int
    value: Number = 0


_TOKEN = re.compile(
    r"(?P<number>(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<operator>\*\*|//|[-+*/%^(),])"
)


def tokenize(text: str) -> Iterator[Token]:
    """The tokens of `text`, lazily, so the first bad position is the one reported; then "end"."""
    position, count = 0, 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            yield Token("end", "", position)
            return
        match = _TOKEN.match(text, position)
        if match is None:
            _fail(f"unexpected character {text[position]!r} at position {position}; expressions "
                  "use numbers, + - * / // % ^ **, parentheses, commas and names like sqrt or pi",
                  position)
        count += 1
        if count > MAX_TOKENS:
            _fail(f"expression has more than {MAX_TOKENS} tokens", position, limit=MAX_TOKENS)
        kind, token_text = match.lastgroup or "", match.group()
        value: Number = 0
        if kind == "number":
            value = float(token_text) if any(c in token_text for c in ".eE") else int(token_text)
            if value == math.inf:
                _fail(f"number {token_text} at position {position} is too large for a float",
                      position)
        yield Token(kind, token_text, position, value)
        position = match.end()


Instruction = tuple[str, Any, int]  # (opcode, argument, position); opcodes below


class _Parser:
    """Recursive descent from text to a postfix program of "push", "negate", "binary" and "call".

    Only parentheses recurse (and they are bounded by `MAX_DEPTH`); runs of signs and power chains
    are loops, so no input can exhaust Python's stack.
    """

    def __init__(self, text: str) -> None:
        self._tokens = tokenize(text)
        self._token = next(self._tokens)
        self._previous: Token | None = None
        self._depth = 0
        self.program: list[Instruction] = []

    def parse(self) -> list[Instruction]:
        self._expression()
        token = self._token
        if token.text == ")":
            _fail(f"unbalanced parenthesis: ')' at position {token.position} has no matching '('",
                  token.position)
        if token.kind != "end":
            juxtaposed = token.kind in ("name", "number") or token.text == "("
            _fail(f"unexpected {token.text!r} at position {token.position}; expected an operator "
                  f"or the end of the expression{'; write * to multiply' if juxtaposed else ''}",
                  token.position)
        return self.program

    def _advance(self) -> Token:
        self._previous, self._token = self._token, next(self._tokens)
        return self._previous

    def _at(self, *operators: str) -> bool:
        return self._token.kind == "operator" and self._token.text in operators

    def _emit(self, opcode: str, argument: Any, position: int) -> None:
        self.program.append((opcode, argument, position))

    def _expression(self) -> None:
        self._term()
        while self._at("+", "-"):
            operator = self._advance()
            self._term()
            self._emit("binary", operator.text, operator.position)

    def _term(self) -> None:
        self._unary()
        while self._at("*", "/", "//", "%"):
            operator = self._advance()
            self._unary()
            self._emit("binary", operator.text, operator.position)

    def _signs(self) -> Token | None:
        """Consume a run of unary signs: the first of them if they negate, else None."""
        first: Token | None = None
        negative = False
        while self._at("+", "-"):
            sign = self._advance()
            first = first or sign
            negative ^= sign.text == "-"
        return first if negative else None

    def _unary(self) -> None:
        negation = self._signs()
        self._power()
        if negation is not None:
            self._emit("negate", None, negation.position)

    def _power(self) -> None:
        self._operand()
        links: list[tuple[Token, Token | None]] = []  # each '^' and the sign of what follows it
        while self._at("^", "**"):
            operator = self._advance()
            negation = self._signs()
            self._operand()
            links.append((operator, negation))
        for operator, negation in reversed(links):
            if negation is not None:
                self._emit("negate", None, negation.position)
            self._emit("binary", "^", operator.position)

    def _operand(self) -> None:
        token = self._token
        if token.kind == "number":
            self._advance()
            self._emit("push", token.value, token.position)
        elif token.kind == "name":
            self._name()
        elif self._at("("):
            opening = self._advance()
            self._enter(opening)
            self._expression()
            self._close(opening, "')'")
        elif token.kind == "end" and self._previous is not None:
            _fail(f"expression ends after {self._previous.text!r} at position "
                  f"{self._previous.position}; expected a number, a name or '(' next",
                  self._previous.position)
        else:
            _fail(f"unexpected {token.text!r} at position {token.position}; expected a number, "
                  "a name or '('", token.position)

    def _name(self) -> None:
        token = self._advance()
        name = token.text.lower()
        if self._at("("):
            function = FUNCTIONS.get(name)
            if function is None:
                _fail(f"unknown name {token.text!r} at position {token.position}: not a function; "
                      f"the functions are {', '.join(sorted(FUNCTIONS))}", token.position,
                      name=token.text)
            count = self._arguments()
            function.check_arity(count, token.position)
            self._emit("call", (name, count), token.position)
        elif name in CONSTANTS:
            self._emit("push", CONSTANTS[name], token.position)
        elif name in FUNCTIONS:
            _fail(f"function {name!r} at position {token.position} must be called with "
                  f"parentheses, like {name}(16)", token.position)
        else:
            _fail(f"unknown name {token.text!r} at position {token.position}; the constants are "
                  f"{', '.join(CONSTANTS)}, and functions are called like sqrt(2)", token.position,
                  name=token.text)

    def _arguments(self) -> int:
        opening = self._advance()
        self._enter(opening)
        count = 0
        if not self._at(")"):
            self._expression()
            count = 1
            while self._at(","):
                self._advance()
                self._expression()
                count += 1
        self._close(opening, "',' or ')'")
        return count

    def _enter(self, opening: Token) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            _fail(f"expression nests deeper than {MAX_DEPTH} levels at position "
                  f"{opening.position}", opening.position, limit=MAX_DEPTH)

    def _close(self, opening: Token, expected: str) -> None:
        token = self._token
        if self._at(")"):
            self._advance()
            self._depth -= 1
        elif token.kind == "end":
            _fail(f"unbalanced parenthesis: '(' at position {opening.position} is never closed",
                  opening.position)
        else:
            _fail(f"expected {expected} at position {token.position}, found {token.text!r}",
                  token.position)


def _checked(value: Number) -> Number:
    """`value`, if it is finite and short enough to print."""
    if isinstance(value, float):
        if math.isnan(value):
            raise _Refused("not a number", "the result is undefined (NaN)")
        if math.isinf(value):
            raise _Refused("result too large", "it is beyond 1.8e308, the largest float")
    elif value.bit_length() > _MAX_INT_BITS:
        raise _Refused("result too large", f"it would have more than {MAX_INT_DIGITS} digits")
    return value


def _require_digits(bits: float) -> None:
    if bits > _MAX_INT_BITS:
        raise _Refused("result too large", f"it would have more than {MAX_INT_DIGITS} digits")


def _require_nonzero(divisor: Number) -> None:
    if divisor == 0:
        raise _Refused("division by zero")


def _multiply(left: Number, right: Number) -> Number:
    if isinstance(left, int) and isinstance(right, int):
        _require_digits(left.bit_length() + right.bit_length() - 1)
    return left * right


def _divide(left: Number, right: Number) -> Number:
    _require_nonzero(right)
    if isinstance(left, int) and isinstance(right, int) and left % right == 0:
        return left // right
    return left / right


def _floor_divide(left: Number, right: Number) -> Number:
    _require_nonzero(right)
    return left // right


def _modulo(left: Number, right: Number) -> Number:
    _require_nonzero(right)
    return left % right


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise _Refused("exponent too large",
                       f"{_show(exponent)} is beyond the limit of {MAX_EXPONENT} in magnitude")
    if base == 0 and exponent < 0:
        raise _Refused("division by zero", "0 cannot be raised to a negative power")
    if isinstance(base, int) and isinstance(exponent, int) and exponent >= 0:
        if abs(base) > 1:
            _require_digits(exponent * math.log2(abs(base)))
        return base**exponent
    if base < 0 and not float(exponent).is_integer():
        raise _Refused("domain error", f"a negative number ({_show(base)}) cannot be raised to a "
                       "fractional power; use cbrt() for cube roots")
    if base != 0 and exponent * math.log10(abs(base)) > _MAX_FLOAT_LOG10:
        raise _Refused("result too large", "it would exceed 1.8e308, the largest float")
    return math.pow(base, exponent)


_BINARY: dict[str, Callable[[Number, Number], Number]] = {
    "+": lambda left, right: left + right, "-": lambda left, right: left - right,
    "*": _multiply, "/": _divide, "//": _floor_divide, "%": _modulo, "^": _power,
}


@dataclass(frozen=True)
class Function:
    """A function of the language: how many arguments it takes, and what it computes."""

    name: str
    apply: Callable[[Arguments], Number]
    min_args: int = 1
    max_args: int | None = 1  # None: any number

    def check_arity(self, count: int, position: int | None) -> None:
        if self.min_args <= count and (self.max_args is None or count <= self.max_args):
            return
        plural = "s" if self.min_args != 1 else ""
        if self.max_args == self.min_args:
            wanted = f"exactly {self.min_args} argument{plural}"
        elif self.max_args is None:
            wanted = f"at least {self.min_args} argument{plural}"
        else:
            wanted = f"{self.min_args} or {self.max_args} arguments"
        where = "" if position is None else f" at position {position}"
        _fail(f"wrong argument count for function {self.name}{where}: it takes {wanted}, "
              f"got {count}", position, function=self.name)


def _whole(value: Number) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise _Refused("domain error", f"it needs whole numbers, got {_show(value)}")
        return int(value)
    return value


def _sqrt(args: Arguments) -> Number:
    (value,) = args
    if value < 0:
        raise _Refused("domain error",
                       f"square root of a negative number ({_show(value)}) is not a real number")
    if isinstance(value, int) and math.isqrt(value) ** 2 == value:
        return math.isqrt(value)
    return math.sqrt(value)


def _cbrt(args: Arguments) -> Number:
    root = math.cbrt(args[0])
    return round(root) if isinstance(args[0], int) and round(root) ** 3 == args[0] else root


def _round(args: Arguments) -> Number:
    """Half away from zero, on the decimal the number prints as (so 2.675 gives 2.68)."""
    value = args[0]
    digits = _whole(args[1]) if len(args) == 2 else 0
    if abs(digits) > 400:
        raise _Refused("domain error", f"it rounds to at most 400 digits, got {digits}")
    step = decimal.Decimal(1).scaleb(-digits)
    rounded = decimal.Decimal(repr(value)).quantize(step, decimal.ROUND_HALF_UP, _DECIMAL_CONTEXT)
    return int(rounded) if len(args) == 1 or isinstance(value, int) else float(rounded)


def _positive(value: Number) -> Number:
    if value <= 0:
        raise _Refused("domain error", f"logarithm of a non-positive number ({_show(value)}) is "
                       "undefined; it needs a value > 0")
    return value


def _log(args: Arguments) -> Number:
    if len(args) == 1:
        return math.log(_positive(args[0]))
    base = args[1]
    if base <= 0 or base == 1:
        raise _Refused("domain error", f"the base must be positive and not 1, got {_show(base)}")
    return math.log(_positive(args[0]), base)


def _within_unit(compute: Callable[[Number], float]) -> Callable[[Arguments], Number]:
    def apply(args: Arguments) -> Number:
        if not -1 <= args[0] <= 1:
            raise _Refused("domain error", f"it needs a value from -1 to 1, got {_show(args[0])}")
        return compute(args[0])
    return apply


def _spread(compute: Callable[..., Number]) -> Callable[[Arguments], Number]:
    """`compute` called with the arguments spread out: `_spread(math.atan2)(args)`."""
    return lambda args: compute(*args)


def _factorial(args: Arguments) -> Number:
    value = _whole(args[0])
    if value < 0:
        raise _Refused("domain error", f"factorial of a negative number ({value}) is undefined")
    if value > MAX_FACTORIAL:
        raise _Refused("argument too large", f"it accepts at most {MAX_FACTORIAL}, got {value}")
    return math.factorial(value)


def _choose(compute: Callable[[int, int], int]) -> Callable[[Arguments], Number]:
    def apply(args: Arguments) -> Number:
        n, k = _whole(args[0]), _whole(args[1])
        if n < 0 or k < 0:
            raise _Refused("domain error", f"it needs non-negative whole numbers, got {n}, {k}")
        if n > MAX_FACTORIAL:
            raise _Refused("argument too large", f"it accepts n at most {MAX_FACTORIAL}, got {n}")
        return compute(n, k)
    return apply


def _lcm(args: Arguments) -> Number:
    result = 1
    for value in map(_whole, args):
        _require_digits(result.bit_length() + value.bit_length())
        result = math.lcm(result, value)
    return result


def _sum(args: Arguments) -> Number:
    return sum(args) if all(isinstance(value, int) for value in args) else math.fsum(args)


def _product(args: Arguments) -> Number:
    result: Number = 1
    for value in args:
        result = _checked(_multiply(result, value))
    return result


FUNCTIONS: dict[str, Function] = {function.name: function for function in (
    Function("sqrt", _sqrt),
    Function("cbrt", _cbrt),
    Function("abs", _spread(abs)),
    Function("round", _round, 1, 2),
    Function("floor", _spread(math.floor)),
    Function("ceil", _spread(math.ceil)),
    Function("exp", _spread(math.exp)),
    Function("ln", lambda args: math.log(_positive(args[0]))),
    Function("log", _log, 1, 2),
    Function("log10", lambda args: math.log10(_positive(args[0]))),
    Function("log2", lambda args: math.log2(_positive(args[0]))),
    Function("sin", _spread(math.sin)),
    Function("cos", _spread(math.cos)),
    Function("tan", _spread(math.tan)),
    Function("asin", _within_unit(math.asin)),
    Function("acos", _within_unit(math.acos)),
    Function("atan", _spread(math.atan)),
    Function("atan2", _spread(math.atan2), 2, 2),
    Function("sinh", _spread(math.sinh)),
    Function("cosh", _spread(math.cosh)),
    Function("tanh", _spread(math.tanh)),
    Function("degrees", _spread(math.degrees)),
    Function("radians", _spread(math.radians)),
    Function("factorial", _factorial),
    Function("comb", _choose(math.comb), 2, 2),
    Function("perm", _choose(math.perm), 2, 2),
    Function("gcd", lambda args: math.gcd(*map(_whole, args)), 1, None),
    Function("lcm", _lcm, 1, None),
    Function("min", min, 1, None),
    Function("max", max, 1, None),
    Function("sum", _sum, 1, None),
    Function("product", _product, 1, None),
    Function("mean", statistics.mean, 1, None),
    Function("median", statistics.median, 1, None),
    Function("stdev", statistics.stdev, 2, None),
    Function("variance", statistics.variance, 2, None),
    Function("hypot", _spread(math.hypot), 1, None),
)}


def _perform(what: str, position: int | None, operation: Callable[[], Number]) -> Number:
    """The checked result of one operation, or an `ExpressionError` naming it and its position."""
    try:
        return _checked(operation())
    except _Refused as refusal:
        problem, detail = refusal.problem, refusal.detail
    except ZeroDivisionError:
        problem, detail = "division by zero", ""
    except OverflowError:
        problem, detail = "number too large", "a value beyond 1.8e308, the largest float, came up"
    except ValueError as exc:  # includes statistics.StatisticsError
        problem, detail = "domain error", str(exc)
    where = "" if position is None else f" at position {position}"
    _fail(f"{problem} in {what}{where}{': ' + detail if detail else ''}", position,
          operation=what)


def _finished(value: Number) -> Number:
    if isinstance(value, float):
        return float(f"{value:.15g}") or 0.0  # `or` turns -0.0 into 0.0
    return value


def apply_function(name: str, args: Sequence[Number]) -> Number:
    """`name(*args)` for one of `FUNCTIONS`, with the checks and result shape of `evaluate`."""
    function = FUNCTIONS[name]
    function.check_arity(len(args), None)
    return _finished(_perform(f"{name}()", None, lambda: function.apply(list(args))))


def evaluate(expression: str) -> Number:
    """The value of `expression`, a finite int or float; or an `ExpressionError` saying why not."""
    if not isinstance(expression, str):
        _fail(f"an expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        _fail(f"expression too long: {len(expression)} characters; at most "
              f"{MAX_EXPRESSION_LENGTH}", limit=MAX_EXPRESSION_LENGTH)
    if not expression.strip():
        _fail("expression is empty")
    stack: list[Number] = []
    for opcode, argument, position in _Parser(expression).parse():
        if opcode == "push":
            stack.append(argument)
        elif opcode == "negate":
            stack.append(-stack.pop())
        elif opcode == "binary":
            right, left = stack.pop(), stack.pop()
            operator = _BINARY[argument]
            stack.append(_perform(f"'{argument}'", position, lambda: operator(left, right)))
        else:
            name, count = argument
            args = stack[len(stack) - count:]
            del stack[len(stack) - count:]
            function = FUNCTIONS[name]
            stack.append(_perform(f"{name}()", position, lambda: function.apply(args)))
    return _finished(stack.pop())
