"""Reading Dash component trees in tests: find a component by id, collect the text."""

from __future__ import annotations

from typing import Any


def find(component: Any, component_id: Any) -> Any:
    """The component with `component_id` inside a layout tree (a list is searched too), or
    None."""
    if isinstance(component, list | tuple):
        return next((f for c in component if (f := find(c, component_id)) is not None), None)
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    if children is None or isinstance(children, str | int | float):
        return None
    return find(children if isinstance(children, list | tuple) else [children], component_id)


def text(component: Any) -> str:
    """All the text inside a Dash component tree."""
    if component is None:
        return ""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return "".join(text(c) for c in component)
    return text(getattr(component, "children", None))
