"""The agent's pod Events through the real REST client against the API stand-in: an
address conflict becomes a Warning Event on the pod (reason, message, involved pod,
the agent as source); an API that does not answer loses the Event, never the agent."""

from __future__ import annotations

from datapath.events import KubeEvents
from kubestandin import KubeStandIn
from plumbing.kube.client import KubeSettings, api_client
from plumbing.kube.rest import RestClient


async def test_a_conflict_event_lands_on_the_pod() -> None:
    async with KubeStandIn(statefulset_controller=False) as api:
        events = KubeEvents(RestClient(api_client(KubeSettings(kube_host=api.url))),
                            node="node-2")
        await events.post(namespace="prod", pod="db-0", uid="u-1", reason="AddressConflict",
                          message="Another host holds this pod's address: 10.0.0.5 answered "
                          "from 02:de:ad:be:ef:01 on fab0 (arp-reply).")
        await events.post(namespace="prod", pod="db-0", uid="u-1",
                          reason="AddressConflictResolved", message="gone", warning=False)
        listed = (await api.list("v1", "Event", "prod"))
        got = sorted((e["reason"], e["type"], e["involvedObject"]["name"],
                      e["involvedObject"]["uid"], e["source"]["component"],
                      e["source"]["host"]) for e in listed)
        assert got == [("AddressConflict", "Warning", "db-0", "u-1", "stickyip-agent", "node-2"),
                       ("AddressConflictResolved", "Normal", "db-0", "u-1", "stickyip-agent",
                        "node-2")]
        assert any("02:de:ad:be:ef:01 on fab0" in e["message"] for e in listed)
        url = api.url
    down = KubeEvents(RestClient(api_client(KubeSettings(kube_host=url))), node="node-2")
    await down.post(namespace="prod", pod="db-0", uid="u-1", reason="AddressConflict",
                    message="x")  # logged, not raised
