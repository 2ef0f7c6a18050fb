"""A DNS server for the lab: answers A queries for the names it is given, NXDOMAIN for
the rest, and logs every query it receives (one line: the source address and the name),
so that a test can tell which queries reached the far side.

Run inside a namespace: `python -m tests.lab.dns_server ADDR LOG NAME=ADDRESS...`.
"""

from __future__ import annotations

import socket
import sys

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


def main(argv: list[str]) -> int:
    addr, log_path, *pairs = argv
    names = {f"{n.rstrip('.')}.".lower(): a for n, a in (p.split("=", 1) for p in pairs)}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))
    print("ready", flush=True)
    with open(log_path, "a", buffering=1) as log:
        while True:
            data, peer = sock.recvfrom(4096)
            try:
                query = dns.message.from_wire(data)
                question = query.question[0]
            except Exception:  # noqa: BLE001 - a lab server drops what it cannot read
                continue
            name = question.name.to_text().lower()
            log.write(f"{peer[0]} {name} {dns.rdatatype.to_text(question.rdtype)}\n")
            response = dns.message.make_response(query)
            if name not in names:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.A:
                response.answer.append(dns.rrset.from_text(name, 5, "IN", "A", names[name]))
            sock.sendto(response.to_wire(), peer)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
