"""What the operator sees on the node's local HTTP server: the status page, ``/metrics`` and
``/healthz``. A node mounts :func:`operator_routes` beside the office-software API."""

from lienthong.statuspage.routes import TOKEN_HEADER, Operator, operator_routes
from lienthong.statuspage.snapshot import Snapshot, take_snapshot

__all__ = ["TOKEN_HEADER", "Operator", "Snapshot", "operator_routes", "take_snapshot"]
