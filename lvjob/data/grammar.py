"""The grammar of LLMTIME forecast text as a small finite-state machine over characters.

A forecast of `points` time points of `variables` values each, written with `decimals` decimals:

    value (',' value){variables-1} (';' value (',' value){variables-1}){points-1}
    value = int '.' digit{decimals},  int = '0' | nonzero digit{0,max_int_digits-1}

Decimals are at least 1: with none, the end of a value would be ambiguous (another digit or a
separator), and a forecast could not know when it is complete.

Parsing runs text through this machine; constrained decoding (the runner) asks it, at every step,
which characters may come next. Qwen2.5 writes each digit, '.', ',' and ';' as one token, so the same
machine constrains generation token by token. Bounding the integer digits is what stops a model from
writing `99999999…` forever: a character whitelist alone cannot. No leading zeros: rendering never
writes `07.5`, so a forecast "in the same format" cannot either (and a weak model that writes a
second digit after a leading '0' would otherwise inflate a value tenfold).
"""

from __future__ import annotations

from dataclasses import dataclass

DIGITS = "0123456789"
VALUE_SEP = ","
POINT_SEP = ";"
DECIMAL_POINT = "."
ALPHABET = DIGITS + DECIMAL_POINT + VALUE_SEP + POINT_SEP  # every character a forecast can hold


@dataclass(frozen=True)
class Grammar:
    variables: int = 2
    decimals: int = 3
    max_int_digits: int = 3
    points: int | None = None  # None: any number of points (parsing); an int: stop after that many

    def __post_init__(self) -> None:
        if self.variables < 1:
            raise ValueError(f"variables must be >= 1, got {self.variables}")
        if self.decimals < 1:
            raise ValueError(f"decimals must be >= 1, got {self.decimals}")
        if self.max_int_digits < 1:
            raise ValueError(f"max_int_digits must be >= 1, got {self.max_int_digits}")
        if self.points is not None and self.points < 1:
            raise ValueError(f"points must be >= 1 or None, got {self.points}")


@dataclass(frozen=True)
class State:
    """Where the machine is: in point `point`, value `var`, with `ints` integer digits and
    `decs` decimals written so far (`decs` is -1 before the decimal point); `zero`: the integer
    part is a single '0', which only the decimal point may follow."""

    point: int = 0
    var: int = 0
    ints: int = 0
    decs: int = -1
    zero: bool = False

    @property
    def value_started(self) -> bool:
        return self.ints > 0


START = State()


def _value_complete(g: Grammar, s: State) -> bool:
    return s.decs == g.decimals


def is_final(g: Grammar, s: State) -> bool:
    """True when a whole forecast has been written: the last value of the last point is complete."""
    return g.points is not None and s.point == g.points - 1 and s.var == g.variables - 1 and _value_complete(g, s)


def allowed(g: Grammar, s: State) -> str:
    """The characters that may come next ('' once the forecast is complete)."""
    if _value_complete(g, s):
        if s.var < g.variables - 1:
            return VALUE_SEP
        if g.points is None or s.point < g.points - 1:
            return POINT_SEP
        return ""
    if s.decs >= 0:  # after the decimal point
        return DIGITS
    if s.ints == 0:
        return DIGITS
    more_ints = DIGITS if s.ints < g.max_int_digits and not s.zero else ""
    return more_ints + DECIMAL_POINT


def step(g: Grammar, s: State, ch: str) -> State | None:
    """The state after `ch`, or None if `ch` is not allowed here."""
    if len(ch) != 1 or ch not in allowed(g, s):
        return None
    if ch == VALUE_SEP:
        return State(point=s.point, var=s.var + 1)
    if ch == POINT_SEP:
        return State(point=s.point + 1, var=0)
    if ch == DECIMAL_POINT:
        return State(point=s.point, var=s.var, ints=s.ints, decs=0, zero=s.zero)
    if s.decs >= 0:
        return State(point=s.point, var=s.var, ints=s.ints, decs=s.decs + 1, zero=s.zero)
    return State(point=s.point, var=s.var, ints=s.ints + 1, decs=-1, zero=s.ints == 0 and ch == "0")


def describe(g: Grammar, s: State) -> str:
    """What the machine expected in state `s`, in words, for error messages."""
    names = {VALUE_SEP: "','", POINT_SEP: "';'", DECIMAL_POINT: "'.'"}
    options = allowed(g, s)
    words = []
    if any(c in DIGITS for c in options):
        words.append("a digit")
    words += [names[c] for c in options if c in names]
    return " or ".join(words) if words else "the end of the forecast"
