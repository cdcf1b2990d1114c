"""A pod sending from an address that is not its own is dropped at the host side of
its veth by the anti-spoofing tc program and counted per endpoint; its real address
keeps working."""

from __future__ import annotations

import sys

from netbed.testbed import Testbed

METRICS = ("import urllib.request;"
           "print(urllib.request.urlopen('http://127.0.0.1:9402/metrics').read().decode())")


def _spoofed(tb: Testbed, node: str, host_if: str) -> int:
    reply = tb.agent_call(node, {"command": "ENDPOINTS"})
    return int(reply["result"]["counters"].get(host_if, {}).get("spoofed_packets", 0))


async def test_spoofed_source_is_dropped_and_counted() -> None:
    async with Testbed(nodes=2) as tb:
        a = await tb.add_pod("node-1", "default", "attacker")
        b = await tb.add_pod("node-2", "default", "victim")
        host_if = a.result["interfaces"][0]["name"]
        assert await tb.wait_ping(a, b.address)
        before = _spoofed(tb, "node-1", host_if)

        # Another address of the pool, and an address from outside every pool.
        for fake in ("10.244.0.60", "198.51.100.7"):
            tb.exec_in(a, ["ip", "addr", "add", f"{fake}/32", "dev", "eth0"], check=True)
            sent = tb.exec_in(a, ["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1",
                                  "-I", fake, b.address])
            assert sent.returncode != 0, "a spoofed ping must not get an answer"
            tb.exec_in(a, ["ip", "addr", "del", f"{fake}/32", "dev", "eth0"], check=True)
        after = _spoofed(tb, "node-1", host_if)
        assert after - before >= 3

        # The pod's own address still works, and the drop is exported as a metric.
        assert await tb.ping(a, b.address)
        text = tb.exec_in("node-1", [sys.executable, "-c", METRICS]).stdout.decode()
        line = next(x for x in text.splitlines()
                    if x.startswith("stickyip_datapath_spoofed_packets_total")
                    and host_if in x)
        assert float(line.rsplit(" ", 1)[1]) >= 3
