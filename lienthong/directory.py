"""The directory of agencies: who hangs under whom, which node serves whom, who may sign.

Pure: built from plain dicts and lists (what :mod:`tomllib` returns), never from a file.
The shape of a directory document::

    national = "000.00.00.G22"            # the agency at the top; it runs the national node

    [[agency]]
    code = "000.00.00.H49"
    name = "UBND tỉnh Quảng Nam"
    node = true                            # this agency runs a daemon of its own
    signers = ["<sha256 hex of a certificate>"]

    [[agency]]
    code = "000.01.00.H49"
    name = "Sở Nội vụ"
    parent = "000.00.00.H49"               # optional: wins over the parent by code
    served_by = "000.00.00.H49"            # optional: the node that serves an agency without one

    [[peer]]                               # optional same-tier shortcut between two nodes
    nodes = ["000.00.00.H49", "000.00.00.H41"]

Where ``parent`` is missing it comes from the code: the nearest ancestor by code that the
directory lists (so a directory without districts hangs communes straight under their province),
and a level-1 code hangs under the national agency. An opaque Decision 20 code has no tree
position in its text and needs an explicit parent. An agency that does not run a node is served
by its nearest ancestor that does, unless ``served_by`` names another node.

Every problem is collected and raised together as one :class:`DirectoryError` whose lines name
the entry (``agency[3]``) and the key; nothing in the input can make construction fail any
other way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lienthong.edxml.codes import AgencyCode, CodeError, parse_code
from lienthong.errors import ConfigError

__all__ = ["Agency", "Directory", "DirectoryError", "normalize_fingerprint"]

_FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")
_AGENCY_KEYS = frozenset({"code", "name", "parent", "node", "served_by", "signers"})
_TOP_KEYS = frozenset({"national", "agency", "peer"})
_NOT_A_NODE = "is not an agency of the directory that runs a node"


class DirectoryError(ConfigError):
    """The directory is wrong; ``problems`` lists ``(key, message)`` for every fault found."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems) or (("directory", "is invalid"),)
        if len(self.problems) == 1:
            key, message = self.problems[0]
            super().__init__(message, key)
            return
        lines = "\n  ".join(f"{key}: {message}" for key, message in self.problems)
        super().__init__(f"the directory has {len(self.problems)} problems:\n  {lines}")


@dataclass(frozen=True, slots=True)
class Agency:
    """One agency of the directory, with its parent and serving node already resolved.

    ``parent`` is ``None`` only for the national agency. ``signers`` holds the sha256
    fingerprints (lower-case hex) of the certificates allowed to sign for it.
    """

    code: str
    name: str
    parent: str | None
    serving_node: str
    runs_node: bool
    signers: frozenset[str]


def normalize_fingerprint(text: str) -> str:
    """``text`` as 64 lower-case hex digits (colons and spaces dropped), or ``ValueError``."""
    if not isinstance(text, str):
        raise ValueError(f"a fingerprint must be text, not {type(text).__name__}")
    cleaned = text.replace(":", "").replace(" ", "").lower()
    if not _FINGERPRINT_RE.match(cleaned):
        raise ValueError(f"{text!r} is not a sha256 fingerprint (64 hex digits)")
    return cleaned


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    code: str
    parsed: AgencyCode
    name: str
    parent: str | None
    runs_node: bool
    served_by: str | None
    signers: frozenset[str]


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, message: str) -> None:
        self.items.append((key, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise DirectoryError(self.items)


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _text(raw: Mapping[str, Any], key: str, where: str, problems: _Problems) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(_key(where, key), f"must be text, not {type(value).__name__}")
        return None
    return value


def _code(
    raw: Mapping[str, Any], key: str, where: str, problems: _Problems
) -> tuple[str, AgencyCode] | None:
    value = _text(raw, key, where, problems)
    if value is None:
        return None
    try:
        return value, parse_code(value)
    except CodeError as exc:
        problems.add(_key(where, key), str(exc))
        return None


def _signers(raw: Any, where: str, problems: _Problems) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        problems.add(f"{where}.signers", "must be a list of sha256 fingerprints")
        return frozenset()
    out: set[str] = set()
    for i, item in enumerate(raw):
        try:
            out.add(normalize_fingerprint(item))
        except ValueError as exc:
            problems.add(f"{where}.signers[{i}]", str(exc))
    return frozenset(out)


def _entry(index: int, raw: Any, problems: _Problems) -> _Entry | None:
    where = f"agency[{index}]"
    if not isinstance(raw, Mapping):
        problems.add(where, "must be a table with at least a code")
        return None
    for unknown in sorted(set(raw) - _AGENCY_KEYS):
        problems.add(f"{where}.{unknown}", f"unknown key; known: {', '.join(sorted(_AGENCY_KEYS))}")
    if "code" not in raw:
        problems.add(f"{where}.code", "missing")
        return None
    code = _code(raw, "code", where, problems)
    name = _text(raw, "name", where, problems)
    parent = _code(raw, "parent", where, problems)
    served_by = _code(raw, "served_by", where, problems)
    node = raw.get("node", False)
    if not isinstance(node, bool):
        problems.add(f"{where}.node", "must be true or false")
        node = False
    signers = _signers(raw.get("signers"), where, problems)
    if code is None:
        return None
    return _Entry(
        key=where,
        code=code[0],
        parsed=code[1],
        name=name or code[0],
        parent=parent[0] if parent else None,
        runs_node=node,
        served_by=served_by[0] if served_by else None,
        signers=signers,
    )


class Directory:
    """An immutable, validated directory. Build it with :meth:`from_mapping`."""

    def __init__(
        self,
        national: str,
        agencies: Mapping[str, Agency],
        peer_links: Iterable[frozenset[str]] = (),
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        """Take already-resolved agencies; :meth:`from_mapping` is the checked way in.

        ``aliases`` maps renamed (old) codes to codes listed here: see :meth:`resolve`.
        """
        self.national = national
        self._agencies = dict(agencies)
        self._children: dict[str, list[str]] = {code: [] for code in self._agencies}
        for agency in self._agencies.values():
            if agency.parent is not None:
                self._children[agency.parent].append(agency.code)
        self.peer_links: frozenset[frozenset[str]] = frozenset(peer_links)
        self.aliases: Mapping[str, str] = {
            old: new for old, new in (aliases or {}).items() if new in self._agencies
        }
        self._depth: dict[str, int] = {}

    def with_aliases(self, aliases: Mapping[str, str]) -> Directory:
        """The same directory where each old code of ``aliases`` stands for its new code
        (aliases whose new code is not listed are left out)."""
        return Directory(self.national, self._agencies, self.peer_links, aliases)

    def resolve(self, code: str) -> str:
        """``code`` itself when listed (or unknown), its new code when it was renamed."""
        if code in self._agencies:
            return code
        return self.aliases.get(code, code)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Directory:
        """Check and resolve a directory document; raise :class:`DirectoryError` on faults."""
        problems = _Problems()
        if not isinstance(data, Mapping):
            raise DirectoryError([("directory", "must be a table")])
        for unknown in sorted(set(data) - _TOP_KEYS):
            problems.add(unknown, f"unknown key; known: {', '.join(sorted(_TOP_KEYS))}")
        national_code = _code(data, "national", "", problems)
        if "national" not in data:
            problems.add("national", "missing: the code of the agency at the top of the tree")
        raw_agencies = data.get("agency", [])
        if not isinstance(raw_agencies, list):
            problems.add("agency", "must be a list of tables ([[agency]])")
            raw_agencies = []
        entries: dict[str, _Entry] = {}
        for index, raw in enumerate(raw_agencies):
            entry = _entry(index, raw, problems)
            if entry is None:
                continue
            if entry.code in entries:
                problems.add(
                    f"{entry.key}.code",
                    f"{entry.code} is listed twice (also {entries[entry.code].key})",
                )
                continue
            entries[entry.code] = entry
        problems.raise_if_any()
        assert national_code is not None
        national = national_code[0]
        if national not in entries:
            raise DirectoryError([("national", f"{national} is not listed as an [[agency]]")])
        if not entries[national].runs_node:
            problems.add(f"{entries[national].key}.node", "the national agency must run a node")
        parents = _resolve_parents(entries, national, problems)
        problems.raise_if_any()
        serving = _resolve_serving(entries, parents, problems)
        links = _peer_links(data.get("peer", []), entries, problems)
        problems.raise_if_any()
        agencies = {
            code: Agency(
                code=code,
                name=e.name,
                parent=parents[code],
                serving_node=serving[code],
                runs_node=e.runs_node,
                signers=e.signers,
            )
            for code, e in entries.items()
        }
        return cls(national, agencies, links)

    # -- queries ------------------------------------------------------------------------------

    def __contains__(self, code: object) -> bool:
        return code in self._agencies

    def __len__(self) -> int:
        return len(self._agencies)

    def get(self, code: str) -> Agency | None:
        """The agency listed under ``code``, or ``None`` when the directory does not list it."""
        return self._agencies.get(code)

    def agency(self, code: str) -> Agency:
        """The agency listed under ``code``; ``KeyError`` naming it when it is not listed."""
        try:
            return self._agencies[code]
        except KeyError:
            raise KeyError(f"{code} is not in the directory") from None

    @property
    def codes(self) -> tuple[str, ...]:
        """Every listed code, in the order of the document."""
        return tuple(self._agencies)

    def parent_of(self, code: str) -> str | None:
        """The parent agency's code; ``None`` for the national agency."""
        return self.agency(code).parent

    def children(self, code: str) -> tuple[str, ...]:
        """The agencies directly under ``code``."""
        self.agency(code)
        return tuple(self._children[code])

    def path_to_root(self, code: str) -> tuple[str, ...]:
        """``code`` then its ancestors, ending with the national agency."""
        path = [code]
        parent = self.parent_of(code)
        while parent is not None:
            path.append(parent)
            parent = self._agencies[parent].parent
        return tuple(path)

    def depth(self, code: str) -> int:
        """0 for the national agency, 1 for the agencies under it, and so on."""
        depth = self._depth.get(code)
        if depth is None:
            depth = len(self.path_to_root(code)) - 1
            self._depth[code] = depth
        return depth

    def is_ancestor(self, ancestor: str, code: str) -> bool:
        """True when ``ancestor`` is strictly above ``code`` in the directory's tree."""
        return ancestor != code and ancestor in self.path_to_root(code)

    @property
    def nodes(self) -> frozenset[str]:
        """The agencies that run a node of their own."""
        return frozenset(c for c, a in self._agencies.items() if a.runs_node)

    def serving_node(self, code: str) -> str:
        """The node that serves ``code`` (``code`` itself when it runs one)."""
        return self.agency(code).serving_node

    def node_parent(self, node: str) -> str | None:
        """The nearest ancestor of ``node`` that runs a node; ``None`` for the national node."""
        for code in self.path_to_root(node)[1:]:
            if self._agencies[code].runs_node:
                return code
        return None

    def peers_of(self, node: str) -> frozenset[str]:
        """The nodes joined to ``node`` by an explicit peer link."""
        return frozenset(c for link in self.peer_links if node in link for c in link - {node})

    def may_sign(self, code: str, fingerprint: str) -> bool:
        """True when the certificate with this sha256 ``fingerprint`` may sign for ``code``.

        An unlisted agency or a malformed fingerprint is ``False``, never an error.
        """
        agency = self._agencies.get(code)
        if agency is None:
            return False
        try:
            return normalize_fingerprint(fingerprint) in agency.signers
        except ValueError:
            return False


def _resolve_parents(
    entries: Mapping[str, _Entry], national: str, problems: _Problems
) -> dict[str, str | None]:
    parents: dict[str, str | None] = {}
    for code, entry in entries.items():
        if code == national:
            if entry.parent is not None:
                problems.add(f"{entry.key}.parent", "the national agency has no parent")
            parents[code] = None
            continue
        if entry.parent is not None:
            if entry.parent not in entries:
                problems.add(f"{entry.key}.parent", f"{entry.parent} is not in the directory")
            elif entry.parent == code:
                problems.add(f"{entry.key}.parent", "an agency cannot be its own parent")
            parents[code] = entry.parent
            continue
        if entry.parsed.kind == "d20":
            problems.add(
                f"{entry.key}.parent",
                f"missing: {code} is a Decision 20 code, which gives no parent by itself",
            )
            parents[code] = None
            continue
        listed = [a.text for a in entry.parsed.ancestors() if a.text in entries]
        parents[code] = listed[0] if listed else national
    if not problems.items:
        _check_cycles(entries, parents, national, problems)
    return parents


def _check_cycles(
    entries: Mapping[str, _Entry],
    parents: Mapping[str, str | None],
    national: str,
    problems: _Problems,
) -> None:
    reaches_root: set[str] = {national}
    for start in entries:
        seen: list[str] = []
        code: str | None = start
        while code is not None and code not in reaches_root:
            if code in seen:
                loop = [*seen[seen.index(code) :], code]
                problems.add(
                    f"{entries[start].key}.parent",
                    "the parents form a cycle: " + " -> ".join(loop),
                )
                return
            seen.append(code)
            code = parents[code]
        reaches_root.update(seen)


def _resolve_serving(
    entries: Mapping[str, _Entry], parents: Mapping[str, str | None], problems: _Problems
) -> dict[str, str]:
    serving: dict[str, str] = {}
    for code, entry in entries.items():
        if entry.served_by is not None:
            target = entries.get(entry.served_by)
            if target is None or not target.runs_node:
                problems.add(
                    f"{entry.key}.served_by",
                    f"{entry.served_by} {_NOT_A_NODE}",
                )
                continue
            if entry.runs_node and entry.served_by != code:
                problems.add(
                    f"{entry.key}.served_by", "an agency that runs a node is served by itself"
                )
                continue
            serving[code] = entry.served_by
            continue
        node: str | None = code
        while node is not None and not entries[node].runs_node:
            node = parents[node]
        # The national agency runs a node (checked earlier), so every walk ends on one.
        assert node is not None
        serving[code] = node
    return serving


def _peer_links(
    raw: Any, entries: Mapping[str, _Entry], problems: _Problems
) -> list[frozenset[str]]:
    if not isinstance(raw, list):
        problems.add("peer", "must be a list of tables ([[peer]])")
        return []
    links: list[frozenset[str]] = []
    for index, item in enumerate(raw):
        where = f"peer[{index}].nodes"
        pair = item.get("nodes") if isinstance(item, Mapping) else None
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(c, str) for c in pair)
        ):
            problems.add(where, "must be a list of two node codes")
            continue
        if pair[0] == pair[1]:
            problems.add(where, "a peer link joins two different nodes")
            continue
        bad = [c for c in pair if c not in entries or not entries[c].runs_node]
        if bad:
            problems.add(where, f"{', '.join(bad)} {_NOT_A_NODE}")
            continue
        links.append(frozenset(pair))
    return links
