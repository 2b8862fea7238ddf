"""Next-hop decisions over the tree of nodes. Pure: a function of (me, directory, recipient).

A recipient is first resolved to the node that serves it; routing then works on the tree of
nodes (a node's parent is its nearest ancestor agency that runs a node). From node ``me`` toward
target node ``t``: down toward the child node on the path when ``t`` is below ``me``, otherwise up
to my parent node. An explicit peer link wins when going through it is strictly shorter:
``1 + tree distance(peer, t) < tree distance(me, t)``.

Why following next hops always arrives, without loops: let ``cost(x)`` be the length of the
route ``x`` picks (its tree distance to ``t``, or one plus a peer's tree distance when a peer
wins). Every hop goes to a node whose own ``cost`` is at least one smaller, so a route ends at
``t`` within ``cost(me) <= tree distance(me, t)`` hops: never longer than the tree path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from lienthong.directory import Directory
from lienthong.edxml.codes import code_problem
from lienthong.errors import ConfigError

__all__ = ["Forward", "Local", "Refused", "Route", "Split", "next_hop", "split_by_next_hop"]


@dataclass(frozen=True, slots=True)
class Local:
    """The recipient is served by this node: deliver to its inbox here."""

    recipient: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Send to the neighbour node ``neighbour``, reached as my ``child``, ``parent`` or ``peer``."""

    recipient: str
    neighbour: str
    via: Literal["child", "parent", "peer"]


@dataclass(frozen=True, slots=True)
class Refused:
    """The recipient cannot be routed; ``reason`` is the sentence for the status 02."""

    recipient: str
    reason: str


Route = Local | Forward | Refused


@dataclass(frozen=True, slots=True)
class Split:
    """Recipients of one package grouped by what this node does with them.

    ``by_hop`` maps each neighbour node to the recipients its copy carries; every recipient
    appears once in the whole split, in the order first given.
    """

    local: tuple[str, ...] = ()
    by_hop: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)

    def only_to(self, hop: str) -> bool:
        """True when every recipient goes to the neighbour ``hop`` (a transfer queued for
        ``hop`` with these recipients is routed as the directory says)."""
        return list(self.by_hop) == [hop] and not self.local and not self.refused


def _node_path(directory: Directory, node: str) -> list[str]:
    """``node`` then its ancestor nodes, ending with the national node."""
    path = [node]
    parent = directory.node_parent(node)
    while parent is not None:
        path.append(parent)
        parent = directory.node_parent(parent)
    return path


def _tree_distance(directory: Directory, a: str, b: str) -> int:
    up_a = _node_path(directory, a)
    up_b = _node_path(directory, b)
    index_b = {code: i for i, code in enumerate(up_b)}
    for i, code in enumerate(up_a):
        if code in index_b:
            return i + index_b[code]
    # Every node path ends at the national node, so two paths always meet.
    raise AssertionError(f"{a} and {b} share no ancestor node")


def _tree_step(
    directory: Directory, me: str, target: str
) -> tuple[str, Literal["child", "parent"]]:
    path = _node_path(directory, target)
    if me in path:
        return path[path.index(me) - 1], "child"
    parent = directory.node_parent(me)
    assert parent is not None  # only the national node has none, and every node is below it
    return parent, "parent"


def _refusal(directory: Directory, recipient: str) -> Refused | None:
    problem = code_problem(recipient)
    if problem is not None:
        return Refused(recipient, f"the recipient code is invalid: {problem}")
    if recipient not in directory:
        return Refused(recipient, f"the recipient {recipient} is not in the directory")
    return None


def next_hop(me: str, directory: Directory, recipient: str) -> Route:
    """What node ``me`` does with a package for ``recipient``.

    ``Local`` when ``me`` serves the recipient, ``Forward`` to the neighbour node to send to,
    ``Refused`` with a reason when the recipient is malformed or not in the directory (never
    guessed). A code the directory carries as an alias of a renamed agency is routed, and
    named in the route, as its new code. Raises :class:`ConfigError` when ``me`` is not a
    node of the directory.
    """
    agency = directory.get(me)
    if agency is None or not agency.runs_node:
        raise ConfigError(f"{me} is not a node of the directory", "node.code")
    recipient = directory.resolve(recipient)
    refused = _refusal(directory, recipient)
    if refused is not None:
        return refused
    target = directory.serving_node(recipient)
    if target == me:
        return Local(recipient)
    tree = _tree_distance(directory, me, target)
    best: tuple[int, str] | None = None
    for peer in directory.peers_of(me):
        cost = 1 + _tree_distance(directory, peer, target)
        if cost < tree and (best is None or (cost, peer) < best):
            best = (cost, peer)
    if best is not None:
        return Forward(recipient, best[1], "peer")
    neighbour, via = _tree_step(directory, me, target)
    return Forward(recipient, neighbour, via)


def split_by_next_hop(me: str, directory: Directory, recipients: Iterable[str]) -> Split:
    """Group ``recipients`` by next hop from ``me`` (duplicates counted once).

    One package to many recipients travels as one copy per neighbour, each copy carrying all
    the recipients reached through that neighbour. Renamed codes are grouped under their new
    code (see :func:`next_hop`).
    """
    local: list[str] = []
    by_hop: dict[str, list[str]] = {}
    refused: dict[str, str] = {}
    seen: set[str] = set()
    for recipient in recipients:
        recipient = directory.resolve(recipient)
        if recipient in seen:
            continue
        seen.add(recipient)
        route = next_hop(me, directory, recipient)
        if isinstance(route, Local):
            local.append(recipient)
        elif isinstance(route, Forward):
            by_hop.setdefault(route.neighbour, []).append(recipient)
        else:
            refused[recipient] = route.reason
    return Split(
        local=tuple(local),
        by_hop={hop: tuple(codes) for hop, codes in by_hop.items()},
        refused=refused,
    )
