"""Next-hop routing over the tree of nodes, on the example topologies and on random trees."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lienthong.directory import Directory
from lienthong.errors import ConfigError
from lienthong.routing import Forward, Local, Refused, next_hop, split_by_next_hop

TOPOLOGIES = Path(__file__).resolve().parents[1] / "config" / "topologies"
NATIONAL = "000.00.00.G22"


def _load(name: str, **extra: Any) -> Directory:
    data = tomllib.loads((TOPOLOGIES / f"{name}.toml").read_text(encoding="utf-8"))
    data.update(extra)
    return Directory.from_mapping(data)


def _walk(directory: Directory, start: str, recipient: str) -> list[str]:
    """The nodes a package visits from ``start`` until it is delivered (``start`` first)."""
    path = [start]
    while True:
        route = next_hop(path[-1], directory, recipient)
        if isinstance(route, Local):
            return path
        assert isinstance(route, Forward), route
        assert route.neighbour not in path, f"loop: {path} -> {route.neighbour}"
        path.append(route.neighbour)


def test_commune_to_commune_across_provinces_goes_through_the_national_node() -> None:
    """In four tiers a commune reaches another province's commune up to national and down."""
    directory = _load("four-tier")
    assert _walk(directory, "000.01.05.H49", "000.03.07.H41") == [
        "000.01.05.H49",
        "000.00.05.H49",
        "000.00.00.H49",
        NATIONAL,
        "000.00.00.H41",
        "000.00.07.H41",
        "000.03.07.H41",
    ]


def test_three_tier_directory_routes_without_districts() -> None:
    """Without districts a commune's next hop up is its province."""
    directory = _load("three-tier")
    assert _walk(directory, "000.00.31.H49", "000.03.07.H41") == [
        "000.00.31.H49",
        "000.00.00.H49",
        NATIONAL,
        "000.00.00.H41",
        "000.03.07.H41",
    ]


def test_peer_link_wins_when_shorter() -> None:
    """In five tiers the districts' peer link replaces the four hops through national."""
    directory = _load("five-tier")
    route = next_hop("000.00.05.H49", directory, "002.03.07.H41")
    assert route == Forward("002.03.07.H41", "000.00.07.H41", "peer")
    assert len(_walk(directory, "001.01.05.H49", "002.03.07.H41")) - 1 == 5
    assert len(_walk(_load("five-tier", peer=[]), "001.01.05.H49", "002.03.07.H41")) - 1 == 8


def test_peer_link_loses_when_the_tree_is_shorter() -> None:
    """A peer link is not taken toward a recipient right below me."""
    directory = _load("five-tier")
    assert next_hop("000.00.05.H49", directory, "001.01.05.H49") == Forward(
        "001.01.05.H49", "000.01.05.H49", "child"
    )


def test_agency_without_node_is_delivered_by_its_serving_node() -> None:
    """A department with no daemon is local at its province's node and routed there by others."""
    directory = _load("four-tier")
    assert next_hop("000.00.00.H49", directory, "000.00.01.H49") == Local("000.00.01.H49")
    assert next_hop(NATIONAL, directory, "000.00.01.H49") == Forward(
        "000.00.01.H49", "000.00.00.H49", "child"
    )


@pytest.mark.parametrize(
    ("recipient", "needle"),
    [("000.09.09.H49", "not in the directory"), ("000.1.05.H49", "recipient code is invalid")],
)
def test_unknown_or_malformed_recipient_is_refused_with_a_reason(
    recipient: str, needle: str
) -> None:
    """Recipients the directory does not list are refused, never guessed from the code."""
    route = next_hop("000.01.05.H49", _load("four-tier"), recipient)
    assert isinstance(route, Refused)
    assert needle in route.reason


def test_routing_from_a_code_that_runs_no_node_is_a_config_error() -> None:
    """Asking for a next hop from an agency without a node names the problem."""
    with pytest.raises(ConfigError, match="not a node"):
        next_hop("000.00.01.H49", _load("four-tier"), NATIONAL)


def test_split_groups_recipients_by_next_hop() -> None:
    """Many recipients split into one copy per neighbour, locals and refusals apart."""
    directory = _load("four-tier")
    split = split_by_next_hop(
        "000.00.00.H49",
        directory,
        [
            "000.03.07.H41",
            "000.01.05.H49",
            "000.00.01.H49",
            "000.00.00.H41",
            "bad",
            "000.00.05.H49",
            "000.03.07.H41",
        ],
    )
    assert split.local == ("000.00.01.H49",)
    assert dict(split.by_hop) == {
        NATIONAL: ("000.03.07.H41", "000.00.00.H41"),
        "000.00.05.H49": ("000.01.05.H49", "000.00.05.H49"),
    }
    assert list(split.refused) == ["bad"]


# -- random trees ----------------------------------------------------------------------------


@st.composite
def trees(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A random directory document of depth 2..5: opaque codes, explicit parents, peer links."""
    depth = draw(st.integers(min_value=2, max_value=5))
    agencies: list[dict[str, Any]] = [{"code": NATIONAL, "node": True}]
    levels: list[list[str]] = [[NATIONAL]]
    counter = 0
    for level in range(1, depth + 1):
        codes: list[str] = []
        for parent in levels[-1]:
            # The first agency of each level always has a child, so the tree reaches `depth`.
            low = 1 if parent == levels[-1][0] else 0
            for _ in range(draw(st.integers(min_value=low, max_value=3))):
                counter += 1
                code = f"N{counter}"
                agencies.append({"code": code, "parent": parent, "node": draw(st.booleans())})
                codes.append(code)
        levels.append(codes)
        del level
    nodes = [a["code"] for a in agencies if a["node"]]
    for agency in agencies:
        # Some agencies without a node are served by a node other than their nearest one.
        if not agency["node"] and draw(st.booleans()):
            agency["served_by"] = draw(st.sampled_from(nodes))
    peers = []
    if len(nodes) > 2:
        for _ in range(draw(st.integers(min_value=0, max_value=4))):
            pair = draw(st.lists(st.sampled_from(nodes), min_size=2, max_size=2, unique=True))
            peers.append({"nodes": pair})
    return {"national": NATIONAL, "agency": agencies, "peer": peers}, depth


@settings(max_examples=60, deadline=None)
@given(trees())
def test_next_hops_reach_the_serving_node_without_loops(tree: tuple[dict[str, Any], int]) -> None:
    """From every node to every agency: delivered at its serving node within depth*2 hops."""
    data, depth = tree
    directory = Directory.from_mapping(data)
    for me in directory.nodes:
        for recipient in directory.codes:
            path = _walk(directory, me, recipient)
            assert path[-1] == directory.serving_node(recipient)
            assert len(path) - 1 <= depth * 2


@settings(max_examples=60, deadline=None)
@given(trees())
def test_every_hop_goes_to_a_neighbour(tree: tuple[dict[str, Any], int]) -> None:
    """A forward goes to my parent node, a child node of mine or a peer, as it says."""
    directory = Directory.from_mapping(tree[0])
    for me in directory.nodes:
        for recipient in directory.codes:
            route = next_hop(me, directory, recipient)
            if not isinstance(route, Forward):
                continue
            if route.via == "parent":
                assert route.neighbour == directory.node_parent(me)
            elif route.via == "child":
                assert directory.node_parent(route.neighbour) == me
            else:
                assert route.neighbour in directory.peers_of(me)


@settings(max_examples=60, deadline=None)
@given(trees())
def test_peer_links_never_lengthen_a_path(tree: tuple[dict[str, Any], int]) -> None:
    """The path with peer links is never longer than the path through the tree alone."""
    data, _ = tree
    with_peers = Directory.from_mapping(data)
    tree_only = Directory.from_mapping({**data, "peer": []})
    for me in with_peers.nodes:
        for recipient in with_peers.codes:
            assert len(_walk(with_peers, me, recipient)) <= len(_walk(tree_only, me, recipient))


@settings(max_examples=40, deadline=None)
@given(trees(), st.data())
def test_split_partitions_the_recipients(
    tree: tuple[dict[str, Any], int], data: st.DataObject
) -> None:
    """Each distinct recipient lands in exactly one group, under its own next hop."""
    directory = Directory.from_mapping(tree[0])
    me = data.draw(st.sampled_from(sorted(directory.nodes)))
    recipients = data.draw(st.lists(st.sampled_from([*directory.codes, "UNKNOWN"]), max_size=12))
    split = split_by_next_hop(me, directory, recipients)
    grouped = [*split.local, *split.refused, *(c for cs in split.by_hop.values() for c in cs)]
    assert sorted(grouped) == sorted(set(recipients))
    for hop, codes in split.by_hop.items():
        for code in codes:
            route = next_hop(me, directory, code)
            assert isinstance(route, Forward)
            assert route.neighbour == hop
