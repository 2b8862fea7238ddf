"""free_port: the ports a process is given for brokers, daemons and APIs it starts."""

from __future__ import annotations

from lienthong.brokersetup import free_port


def test_a_process_is_never_given_one_port_twice() -> None:
    """A network's ports are all chosen before the first broker binds one: two of them must
    never be the same port (a daemon's API once got its own broker's port and exited with
    "address already in use")."""
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port < 32768 for port in ports)
