"""What installing a set of distributions installs, for the packaging tests and the images'."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def requirement_closure(
    roots: Iterable[str],
    requires: Callable[[str], Iterable[str]],
    environment: Mapping[str, str] | None = None,
) -> set[str]:
    """The distributions that installing ``roots`` installs (canonical names), given each
    distribution's ``Requires-Dist`` lines and the target's marker environment."""
    context = {"extra": "", **(environment or {})}
    found: set[str] = set()
    todo = [canonicalize_name(Requirement(root).name) for root in roots]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for line in requires(name):
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(context):
                todo.append(canonicalize_name(requirement.name))
    return found
