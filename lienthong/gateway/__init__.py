"""What office software talks to: the local HTTP API in the national axis SDK's wire format.

:mod:`lienthong.gateway.axis` is the wire format (pure); :mod:`lienthong.gateway.http` the
aiohttp application and its listener. A node starts it with :func:`start_gateway`.
"""

from lienthong.gateway.axis import Client, HashPolicy
from lienthong.gateway.http import Listener, load_clients, make_app, serve, start_gateway

__all__ = ["Client", "HashPolicy", "Listener", "load_clients", "make_app", "serve", "start_gateway"]
