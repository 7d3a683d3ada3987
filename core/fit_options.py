"""How a fit option is declared and checked, importable without torch or scanpy.

Each field of `core.params.FitParams` is declared with :func:`option`: its default, a help
text and what it allows (a range, choices), and whether `velodash fit` offers it. From that one
declaration :func:`describe` makes a `FitOption` per field, which the command line turns into
flags, the JSON API and the home page check values with (`FitOption.problem`), and the home
page turns into controls.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any

#: Key of a fit option's `_Spec` in its dataclass field's metadata.
_SPEC = "fit_option"
#: Longest rendering of a bad value in a message (a request may send anything).
_MAX_SHOWN = 60


@dataclass(frozen=True)
class _Spec:
    help: str
    choices: tuple[str, ...]
    min: float | None
    max: float | None
    cli: bool
    item: str


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    min: float | None = None,
    max: float | None = None,
    cli: bool = True,
    item: str = "value",
) -> Any:
    """A dataclass field declaring one fit option: its default, help text, allowed range
    (`min`/`max`, inclusive) or `choices`, whether `velodash fit` has a flag for it (`cli`),
    and for a list option what one entry is called in messages (`item`)."""
    spec = _Spec(help, tuple(choices), min, max, cli, item)
    return dataclasses.field(default=default, metadata={_SPEC: spec})


@dataclass(frozen=True)
class FitOption:
    """One declared fit option. `kind` is the value's type: bool, int, float, str, or tuple (a
    list of `choices`); `optional` allows None (decided from the data)."""

    name: str
    kind: type
    optional: bool
    default: Any
    help: str
    choices: tuple[str, ...]
    min: float | None
    max: float | None
    cli: bool
    item: str

    @property
    def label(self) -> str:
        """The option's name as a page shows it ("max_epochs" -> "Max epochs")."""
        return self.name.replace("_", " ").capitalize()

    @property
    def flag(self) -> str:
        """Its `velodash fit` flag: --name-with-dashes, or --no-name for a boolean on by default."""
        flag = self.name.replace("_", "-")
        return f"--no-{flag}" if self.kind is bool and self.default else f"--{flag}"

    def allowed(self) -> str:
        """What a value must be, in words ("an integer between 1 and 100000")."""
        if self.kind is tuple:
            text = f"a list with any of {', '.join(self.choices)}"
        elif self.choices:
            text = f"one of {', '.join(self.choices)}"
        elif self.kind is bool:
            text = "true or false"
        elif self.kind in (int, float):
            text = "an integer" if self.kind is int else "a number"
            if self.min is not None and self.max is not None:
                text += f" between {self.min} and {self.max}"
            elif self.min is not None:
                text += f" of at least {self.min}"
            elif self.max is not None:
                text += f" of at most {self.max}"
        else:
            text = "a string"
        return f"{text} or null" if self.optional else text

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this option ("must be …; got …"), or None if it is
        allowed. Types are strict: no bool for a number, no string for a number."""
        if value is None and self.optional:
            return None
        if not self._has_kind(value):
            return f"must be {self.allowed()}; got {_shown(value)}"
        if self.kind is tuple:
            unknown = [v for v in value if v not in self.choices]
            if unknown:
                return (
                    f"names an unknown {self.item}: {', '.join(map(_shown, unknown))}; "
                    f"choose from {', '.join(self.choices)}"
                )
            return None
        low = self.min is None or value >= self.min  # comparisons are False for NaN
        high = self.max is None or value <= self.max
        if (self.choices and value not in self.choices) or not (low and high):
            return f"must be {self.allowed()}; got {_shown(value)}"
        return None

    def check(self, value: Any) -> None:
        """Raise ValueError naming the option, the bad value and what is allowed."""
        problem = self.problem(value)
        if problem is not None:
            raise ValueError(f"'{self.name}' {problem}")

    def _has_kind(self, value: Any) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        if isinstance(value, bool):
            return False
        if self.kind is int:
            return isinstance(value, numbers.Integral)
        if self.kind is float:
            return isinstance(value, numbers.Real) and math.isfinite(value)
        if self.kind is tuple:
            return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        return isinstance(value, self.kind)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _kind(hint: Any) -> tuple[type, bool]:
    """(value type, whether None is allowed) of a field's type hint."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return _kind(inner)[0], True
    return typing.get_origin(hint) or hint, False


def describe(cls: type) -> dict[str, FitOption]:
    """name -> `FitOption` for every field of dataclass `cls` declared with :func:`option`,
    in declaration order."""
    hints = typing.get_type_hints(cls)
    described = {}
    for f in dataclasses.fields(cls):
        spec: _Spec = f.metadata[_SPEC]
        kind, optional = _kind(hints[f.name])
        described[f.name] = FitOption(
            f.name,
            kind,
            optional,
            f.default,
            spec.help,
            spec.choices,
            spec.min,
            spec.max,
            spec.cli,
            spec.item,
        )
    return described
