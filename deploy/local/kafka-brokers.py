"""Print the node ids of the brokers a Kafka broker knows as alive, one per line.

    python3 deploy/local/kafka-brokers.py PORT

`servers.sh` calls it to decide that a multi-broker cluster is ready: every broker has
registered with the controller quorum and is unfenced. Standard library only (one Metadata v4
request asking for no topics), so it runs before any virtualenv exists. Exit status 1 when the
broker does not answer.
"""

from __future__ import annotations

import socket
import struct
import sys


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def brokers(port: int, timeout_s: float = 2.0) -> list[int]:
    client_id = b"freshrec-servers"
    # header v1: api key 3 (Metadata), version 4, correlation id, client id;
    # body: an empty topic array (no topics, just brokers), no auto creation
    request = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id + struct.pack(">ib", 0, 0)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _read(sock, 4))
        body = _read(sock, size)
    # correlation id, throttle time, broker count
    _, _, count = struct.unpack_from(">iii", body, 0)
    offset, ids = 12, []
    for _ in range(count):
        (node_id,) = struct.unpack_from(">i", body, offset)
        (host_len,) = struct.unpack_from(">h", body, offset + 4)
        offset += 4 + 2 + host_len + 4  # node id, host, port
        (rack_len,) = struct.unpack_from(">h", body, offset)
        offset += 2 + max(rack_len, 0)
        ids.append(node_id)
    return sorted(ids)


if __name__ == "__main__":
    try:
        found = brokers(int(sys.argv[1]))
    except (OSError, struct.error):
        sys.exit(1)
    sys.stdout.write("".join(f"{node}\n" for node in found))
