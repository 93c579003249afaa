"""Running one probe: an HTTP GET or TCP connect against the pod's address, or a command
inside the container. Returns (success, message); never raises."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# (argv, timeout) -> (exit code, output)
ExecFn = Callable[[Sequence[str], float], tuple[int, str]]


def resolve_port(port: Any, named_ports: Mapping[str, int]) -> int:
    if isinstance(port, int):
        return port
    if str(port).isdigit():
        return int(port)
    if port in named_ports:
        return named_ports[port]
    raise ValueError(f"the container has no port named {port!r}")


def named_ports(container: Mapping[str, Any]) -> dict[str, int]:
    return {
        p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")
    }


def check(
    handler: Mapping[str, Any],
    *,
    pod_ip: str,
    ports: Mapping[str, int],
    timeout: float,
    exec_fn: ExecFn,
) -> tuple[bool, str]:
    try:
        if "httpGet" in handler:
            return _http(handler["httpGet"], pod_ip, ports, timeout)
        if "tcpSocket" in handler:
            spec = handler["tcpSocket"]
            port = resolve_port(spec["port"], ports)
            with socket.create_connection((spec.get("host") or pod_ip, port), timeout=timeout):
                return True, ""
        if "exec" in handler:
            code, output = exec_fn(handler["exec"]["command"], timeout)
            return code == 0, output.strip()[-1024:]
        if "grpc" in handler:
            return False, "grpc probes are not supported by the process node"
        return False, "probe has no handler"
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {timeout}s"
    except (OSError, ValueError, http.client.HTTPException) as err:
        return False, str(err) or type(err).__name__


def _http(
    spec: Mapping[str, Any], pod_ip: str, ports: Mapping[str, int], timeout: float
) -> tuple[bool, str]:
    host = spec.get("host") or pod_ip
    port = resolve_port(spec["port"], ports)
    connection: http.client.HTTPConnection
    if str(spec.get("scheme", "HTTP")).upper() == "HTTPS":
        # as a kubelet: HTTPS probes do not verify the certificate
        context = ssl._create_unverified_context()
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"User-Agent": "kube-probe/shardkeeper-process-node", "Accept": "*/*"}
    for header in spec.get("httpHeaders") or []:
        headers[header["name"]] = header["value"]
    try:
        connection.request("GET", spec.get("path") or "/", headers=headers)
        response = connection.getresponse()
        body = response.read(1024).decode("utf-8", "replace")
    finally:
        connection.close()
    if 200 <= response.status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {response.status} {body[:200]}"
