"""The hand-offs of ``ops.handoffs`` as Dagster types, so every step's inputs and outputs are
type-checked at the step boundary, and a stored value of the wrong kind fails there with one
line naming the step's input and what it held.

Dagster turns a class annotation into an isinstance check but refuses a union
(``TextFeatureFile | Skipped``), which a skippable step takes and returns. ``typed_handoffs``
gives a step function a signature whose hand-off annotations (a class, a union of classes,
a list of them, ``dg.Output[...]`` of them) are Dagster types checking exactly those
classes; the function's own annotations stay the Python ones, the one statement of what it
takes and hands on. Where Dagster takes a type outside the signature (``dg.DynamicOut``,
``dg.AssetOut``, ``dg.AssetIn``), ``dagster_type`` gives the same type.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from ops.handoffs import Handoff

F = TypeVar("F", bound=Callable[..., Any])


class HandoffType(dg.DagsterType):
    """Accepts an instance of any of ``members`` (hand-off classes)."""

    def __init__(self, members: tuple[type[Handoff], ...]) -> None:
        self.members = members
        self.names = " or ".join(member.__name__ for member in members)

        def type_check(_context: dg.TypeCheckContext, value: object) -> dg.TypeCheck:
            problem = self.problem(value)
            return dg.TypeCheck(success=problem is None, description=problem)

        super().__init__(
            type_check_fn=type_check,
            name="Or".join(member.__name__ for member in members),
            description=f"{self.names} (ops.handoffs)",
            typing_type=typing.Union[members],  # noqa: UP007 (members is a runtime tuple)
        )

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not one of the members; None when it is."""
        if isinstance(value, self.members):
            return None
        # A dict is what every step handed on before hand-offs were typed.
        stale = (
            " (a hand-off stored in an earlier format: materialize the asset that made it again)"
            if isinstance(value, dict)
            else ""
        )
        return f"got a {type(value).__name__}, not {self.names}{stale}"


_TYPES: dict[frozenset[type[Handoff]], HandoffType] = {}


def handoff_type(*members: type[Handoff]) -> HandoffType:
    """The one Dagster type of this set of hand-off classes (a job refuses two types of one
    name, so each set gets exactly one)."""
    key = frozenset(members)
    if key not in _TYPES:
        _TYPES[key] = HandoffType(members)
    return _TYPES[key]


def _is_handoff(hint: object) -> bool:
    return isinstance(hint, type) and issubclass(hint, Handoff)


def _members(hint: object) -> tuple[type[Handoff], ...]:
    """The hand-off classes ``hint`` names: itself, or a union's members; () for others."""
    if _is_handoff(hint):
        return (typing.cast(type[Handoff], hint),)
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union) and all(map(_is_handoff, args)):
        return args
    return ()


def handoff_type_of(hint: type | types.UnionType) -> HandoffType:
    """The Dagster type of a hand-off class or a union of them (``X | Skipped``)."""
    members = _members(hint)
    if not members:
        raise TypeError(f"{hint} is not a hand-off class or a union of them")
    return handoff_type(*members)


def dagster_type(hint: object) -> object:
    """What Dagster should check for the annotation ``hint``: a ``HandoffType`` for a hand-off
    class or a union of them, ``dg.List`` / ``dg.Output`` of one for a list / an output of
    them; any other annotation unchanged."""
    if members := _members(hint):
        return handoff_type(*members)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is dg.Output and len(args) == 1 and (inner := dagster_type(args[0])) is not args[0]:
        return dg.Output[inner]
    if origin is list and len(args) == 1 and (inner := dagster_type(args[0])) is not args[0]:
        return dg.List[inner]
    return hint


def typed_handoffs(fn: F) -> F:
    """Give ``fn`` (an asset, op or graph function, under its Dagster decorator) the
    signature Dagster reads, with each hand-off annotation as its ``dagster_type``. Dagster
    takes a step's parameters and types from ``__signature__`` when a function has one, as
    ``inspect.signature`` does; ``fn.__annotations__`` stay as written."""
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    parameters = [
        parameter.replace(annotation=dagster_type(hints[parameter.name]))
        if parameter.name in hints
        else parameter
        for parameter in signature.parameters.values()
    ]
    returns = dagster_type(hints["return"]) if "return" in hints else signature.return_annotation
    fn.__signature__ = signature.replace(parameters=parameters, return_annotation=returns)  # type: ignore[attr-defined]
    return fn
