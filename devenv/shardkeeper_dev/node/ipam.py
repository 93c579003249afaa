"""Pod addresses: one loopback address per pod, so pods can share ports as on a cluster.

All of 127.0.0.0/8 is local on Linux without any configuration. Pods get addresses from
a /16 of 127.1.0.0 to 127.250.0.0, away from 127.0.0.1 (the node and the control plane)
and 127.0.0.53 (a local resolver). Addresses are handed out round-robin so that a
released one is not reused at once, as on a cluster, where a recreated pod gets a fresh IP.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from pathlib import Path

POD_NETWORK = ipaddress.IPv4Network("127.1.0.0/16")
HOST_IP = "127.0.0.1"
_NETWORKS = 250


def pod_network_for(state_dir: Path) -> ipaddress.IPv4Network:
    """A /16 chosen by the node's state dir: the same on every start of that node, and
    most likely different for two environments on one machine, whose pods would
    otherwise meet on the same addresses and ports."""
    digest = hashlib.sha256(str(state_dir).encode()).digest()
    return ipaddress.IPv4Network(f"127.{1 + int.from_bytes(digest[:4]) % _NETWORKS}.0.0/16")


def _usable(address: ipaddress.IPv4Address) -> bool:
    # skip addresses ending in .0 and .255, which look like network or broadcast ones
    return 0 < int(address) & 0xFF < 0xFF


class IpAllocator:
    """Addresses by owner (a pod uid). Thread-safe; holds no I/O."""

    def __init__(self, network: ipaddress.IPv4Network = POD_NETWORK) -> None:
        self._network = network
        self._by_owner: dict[str, str] = {}
        self._owners: dict[str, str] = {}
        self._cursor = int(network.network_address)
        self._lock = threading.Lock()

    def allocate(self, owner: str) -> str:
        """The owner's address, allocating one if it has none."""
        with self._lock:
            if owner in self._by_owner:
                return self._by_owner[owner]
            first = int(self._network.network_address)
            size = self._network.num_addresses
            for step in range(1, size + 1):
                candidate = ipaddress.IPv4Address(first + (self._cursor - first + step) % size)
                text = str(candidate)
                if _usable(candidate) and text not in self._owners:
                    self._cursor = int(candidate)
                    self._take(owner, text)
                    return text
            raise RuntimeError(f"no free pod address left in {self._network}")

    def reserve(self, owner: str, address: str) -> bool:
        """Give ``owner`` the address it already had (after a node restart) if still free."""
        with self._lock:
            try:
                parsed = ipaddress.IPv4Address(address)
            except ValueError:
                return False
            if parsed not in self._network or not _usable(parsed):
                return False
            if owner in self._by_owner:
                return self._by_owner[owner] == address
            if address in self._owners:
                return False
            self._take(owner, address)
            # new pods get addresses after the ones already in use
            self._cursor = max(self._cursor, int(parsed))
            return True

    def release(self, owner: str) -> None:
        with self._lock:
            address = self._by_owner.pop(owner, None)
            if address is not None:
                del self._owners[address]

    def _take(self, owner: str, address: str) -> None:
        self._by_owner[owner] = address
        self._owners[address] = owner
