"""The arithmetic language: right values, exact integers, bounded work, and errors that point."""

from __future__ import annotations

import builtins
import math
import pickle
import time

import pytest

from actors.agents.expression import ExpressionError, apply_function, evaluate
from actors.errors import InvalidTaskInput


@pytest.mark.parametrize("expression, expected", [
    ("2*(3+4)^2", 98),
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),
    ("100 / 10 / 5", 2),
    ("2^3^2", 512),
    ("2**3**2", 512),
    ("-2^2", -4),
    ("(-2)^2", 4),
    ("2^-1", 0.5),
    ("+-+3", -3),
    ("--3", 3),
    ("7 // 2", 3),
    ("-7 // 2", -4),
    ("17 % 5", 2),
    ("-7 % 3", 2),
    ("7 / 2", 3.5),
    ("1e3 + 1", 1001.0),
    (".5 * 4", 2.0),
    ("1.5e-3 * 1000", 1.5),
    ("0.1 + 0.2", 0.3),
    ("2^100", 1267650600228229401496703205376),
    ("  3  *\t4 ", 12),
])
def test_operators_precedence_and_associativity(expression, expected):
    assert evaluate(expression) == expected


def test_exact_integer_results_stay_integers():
    exact = ("2+2", "8/2", "2^10", "sqrt(144)", "cbrt(-27)", "factorial(5)", "round(2.5)")
    for expression in exact:
        assert type(evaluate(expression)) is int, expression
    assert type(evaluate("7/2")) is float


@pytest.mark.parametrize("expression, expected", [
    ("pi", 3.14159265358979),
    ("e", 2.71828182845905),
    ("tau / 2", 3.14159265358979),
    ("sqrt(144)", 12),
    ("sqrt(2)", 1.4142135623731),
    ("cbrt(27)", 3),
    ("cbrt(-8)", -2),
    ("abs(-4.5)", 4.5),
    ("round(3.14159, 2)", 3.14),
    ("round(2.675, 2)", 2.68),
    ("round(2.5)", 3),
    ("round(-2.5)", -3),
    ("round(1234, -2)", 1200),
    ("floor(2.7)", 2),
    ("floor(-2.5)", -3),
    ("ceil(2.1)", 3),
    ("exp(0)", 1.0),
    ("ln(e)", 1.0),
    ("log(e^2)", 2.0),
    ("log(8, 2)", 3.0),
    ("log(1000, 10)", 3.0),
    ("log10(1000)", 3.0),
    ("log2(1024)", 10.0),
    ("sin(pi/2)", 1.0),
    ("sin(pi/6)", 0.5),
    ("cos(0)", 1.0),
    ("tan(pi/4)", 1.0),
    ("asin(1)", 1.5707963267949),
    ("acos(1)", 0.0),
    ("atan(1) * 4", 3.14159265358979),
    ("atan2(1, 1)", 0.785398163397448),
    ("sinh(0)", 0.0),
    ("cosh(0)", 1.0),
    ("tanh(0)", 0.0),
    ("degrees(pi)", 180.0),
    ("radians(180)", 3.14159265358979),
    ("factorial(0)", 1),
    ("factorial(10)", 3628800),
    ("gcd(12, 18)", 6),
    ("gcd(48, 180, 24)", 12),
    ("lcm(4, 6)", 12),
    ("lcm(3, 4, 5)", 60),
    ("min(3, 1, 2)", 1),
    ("max(3, 1, 2)", 3),
    ("sum(1, 2, 3, 4)", 10),
    ("product(2, 3, 7)", 42),
    ("mean(1, 2, 3, 4)", 2.5),
    ("median(5, 1, 3)", 3),
    ("median(4, 1, 3, 2)", 2.5),
    # mean 5, squared deviations sum to 32, sample variance 32/7.
    ("stdev(2, 4, 4, 4, 5, 5, 7, 9)", 2.1380899352994),
    ("variance(2, 4, 4, 4, 5, 5, 7, 9)", 4.57142857142857),
    ("hypot(3, 4)", 5.0),
    ("comb(5, 2)", 10),
    ("perm(5, 2)", 20),
    ("SQRT(16) + Pi - PI", 4.0),
])
def test_functions_and_constants(expression, expected):
    assert evaluate(expression) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_factorial_limit_is_inclusive_and_exact():
    assert evaluate("factorial(1000)") == math.factorial(1000)


@pytest.mark.parametrize("expression, fragment", [
    ("(1+2", "unbalanced parenthesis: '(' at position 0 is never closed"),
    ("1+2)", "unbalanced parenthesis: ')' at position 3 has no matching '('"),
    ("sqrt(4", "'(' at position 4 is never closed"),
    ("1+", "expression ends after '+' at position 1"),
    ("2*", "expression ends after '*' at position 1"),
    ("*2", "unexpected '*' at position 0"),
    ("1 2", "unexpected '2' at position 2"),
    ("2pi", "write * to multiply"),
    ("()", "unexpected ')' at position 1"),
    ("3 $ 4", "unexpected character '$' at position 2"),
    ("foo(1)", "unknown name 'foo' at position 0"),
    ("x + 1", "unknown name 'x' at position 0"),
    ("1 + bar", "unknown name 'bar' at position 4"),
    ("sqrt", "must be called with parentheses"),
    ("", "expression is empty"),
    ("   ", "expression is empty"),
    ("max(1,)", "unexpected ')' at position 6"),
    ("max(1 2)", "expected ',' or ')' at position 6"),
])
def test_malformed_expressions_say_what_and_where(expression, fragment):
    with pytest.raises(ExpressionError) as caught:
        evaluate(expression)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("expression, fragment", [
    ("1/0", "division by zero in '/' at position 1"),
    ("5 // 0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("1 / (2 - 2)", "division by zero"),
    ("0^-1", "division by zero"),
    ("sqrt(-4)", "domain error in sqrt() at position 0: square root of a negative number (-4)"),
    ("ln(0)", "logarithm of a non-positive number"),
    ("log(-1)", "logarithm of a non-positive number"),
    ("log(8, 1)", "base must be positive and not 1"),
    ("asin(2)", "domain error in asin() at position 0: it needs a value from -1 to 1"),
    ("(-8)^(1/3)", "cannot be raised to a fractional power"),
    ("factorial(-1)", "factorial of a negative number"),
    ("factorial(2.5)", "needs whole numbers"),
    ("sqrt(1, 2)", "wrong argument count for function sqrt"),
    ("atan2(1)", "wrong argument count for function atan2"),
    ("round(1, 2, 3)", "takes 1 or 2 arguments, got 3"),
    ("stdev(1)", "takes at least 2 arguments, got 1"),
])
def test_arithmetic_errors_are_specific(expression, fragment):
    with pytest.raises(ExpressionError) as caught:
        evaluate(expression)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("expression, fragment", [
    ("2**99999999", "exponent too large in '^' at position 1: 99999999 is beyond"),
    ("2^(10^8)", "beyond the limit of 10000"),
    ("10^-20000", "beyond the limit of 10000"),
    ("9^9999", "more than 4300 digits"),
    ("(10^3000) * (10^3000)", "more than 4300 digits"),
    ("2.0^5000", "would exceed 1.8e308"),
    ("exp(1000)", "too large"),
    ("exp(709) * 10", "too large"),
    ("1e400", "too large for a float"),
    ("factorial(1001)", "at most 1000"),
    ("comb(5000, 2)", "at most 1000"),
])
def test_huge_results_are_refused_before_they_are_computed(expression, fragment):
    started = time.perf_counter()
    with pytest.raises(ExpressionError) as caught:
        evaluate(expression)
    assert time.perf_counter() - started < 1.0
    assert fragment in str(caught.value)


def test_size_limits():
    with pytest.raises(ExpressionError, match="expression too long: 1001 characters"):
        evaluate("1" * 1001)
    with pytest.raises(ExpressionError, match="more than 500 tokens"):
        evaluate("1+" * 300 + "1")
    with pytest.raises(ExpressionError, match="nests deeper than 50 levels"):
        evaluate("(" * 51 + "1" + ")" * 51)
    assert evaluate("(" * 50 + "1" + ")" * 50) == 1
    assert evaluate("2" + "^1" * 200) == 2  # long power chains are loops, not recursion


@pytest.mark.parametrize("expression", [
    "__import__('os')",
    "__import__('os').system('true')",
    "os.system('true')",
    "open('/etc/passwd')",
    "lambda: 1",
    "().__class__",
])
def test_python_is_never_evaluated(expression, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("eval, exec and compile must never run")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    with pytest.raises(ExpressionError):
        evaluate(expression)
    assert evaluate("2 + 2") == 4


def test_unknown_name_is_reported_for_import_tricks():
    with pytest.raises(ExpressionError, match="unknown name '__import__' at position 0"):
        evaluate("__import__('os')")


def test_errors_are_non_retryable_task_input_errors_with_positions():
    with pytest.raises(InvalidTaskInput) as caught:
        evaluate("1 + (2 * 3")
    assert caught.value.code == "invalid_task_input"
    assert caught.value.retryable is False
    assert caught.value.details["position"] == 4
    copy = pickle.loads(pickle.dumps(caught.value))  # errors cross Ray actors
    assert str(copy) == str(caught.value) and copy.details == caught.value.details


def test_apply_function_shares_the_checks():
    assert apply_function("mean", [2, 4, 9]) == 5
    assert apply_function("product", [2, 3, 7]) == 42
    with pytest.raises(ExpressionError, match="takes at least 2 arguments"):
        apply_function("stdev", [1])
