"""The generated BIRD 2 config: what each node announces and whom it peers with."""

from __future__ import annotations

import ipaddress

import pytest

from datapath.bird import config_of, protocol_name, render


def test_announces_blocks_and_migrated_32s_and_peers_with_others() -> None:
    cfg = config_of(router_id="192.168.0.1", asn=64512,
                    blocks=[ipaddress.IPv4Network("10.0.0.64/26"),
                            ipaddress.IPv4Network("10.0.0.0/26")],
                    migrated=[ipaddress.IPv4Address("10.0.1.5")],
                    peers={"node-1": {4: "192.168.0.1"}, "node-2": {4: "192.168.0.2"},
                           "node.3": {4: "192.168.0.3"}},
                    self_node="node-1")
    text = render(cfg)
    assert "router id 192.168.0.1;" in text
    assert text.index("route 10.0.0.0/26 blackhole;") < text.index("route 10.0.0.64/26")
    assert "route 10.0.1.5/32 blackhole;" in text
    assert "protocol bgp peer_node_2 from stickyip_peer" in text
    assert "neighbor 192.168.0.3 as 64512;" in text
    assert "192.168.0.1 as" not in text, "no session to itself"
    assert "export where source = RTS_BGP;" in text  # only learned routes reach the kernel
    assert "export where source = RTS_STATIC;" in text  # only our statics are announced
    assert "ipv6" not in text  # no IPv6 address on this node: no IPv6 half


def test_render_is_deterministic() -> None:
    kw = dict(router_id="10.1.1.1", asn=65000, blocks=[], migrated=[], self_node="a")
    one = render(config_of(peers={"b": {4: "10.1.1.2"}, "c": {4: "10.1.1.3"}}, **kw))  # type: ignore[arg-type]
    two = render(config_of(peers={"c": {4: "10.1.1.3"}, "b": {4: "10.1.1.2"}}, **kw))  # type: ignore[arg-type]
    assert one == two


def test_protocol_names_are_bird_safe() -> None:
    assert protocol_name("ip-10-0-0-1.ec2.internal") == "peer_ip_10_0_0_1_ec2_internal"


def test_bad_router_id_is_refused() -> None:
    with pytest.raises(ValueError):
        render(config_of(router_id="not-an-ip", asn=1, blocks=[], migrated=[], peers={},
                         self_node="a"))


def test_ipv6_gets_its_own_static_kernel_and_sessions_between_ipv6_addresses() -> None:
    cfg = config_of(router_id="192.168.0.1", asn=64512,
                    blocks=[ipaddress.IPv6Network("fd00:10::40/122"),
                            ipaddress.IPv4Network("10.0.0.0/26")],
                    migrated=[ipaddress.IPv6Address("fd00:10::5"),
                              ipaddress.IPv4Address("10.0.1.5")],
                    peers={"node-1": {4: "192.168.0.1", 6: "fd00:fab::1"},
                           "node-2": {4: "192.168.0.2", 6: "fd00:fab::2"},
                           "node-3": {4: "192.168.0.3"}},
                    self_node="node-1", ipv6=True)
    text = render(cfg)
    v4 = text[text.index("protocol static stickyip_announce {"):]
    v4 = v4[:v4.index("}")]
    v6 = text[text.index("protocol static stickyip_announce6 {"):]
    v6 = v6[:v6.index("}")]
    assert "ipv4;" in v4 and "route 10.0.0.0/26 blackhole;" in v4
    assert "route 10.0.1.5/32 blackhole;" in v4 and "fd00" not in v4
    assert "ipv6;" in v6 and "route fd00:10::40/122 blackhole;" in v6
    assert "route fd00:10::5/128 blackhole;" in v6 and "10.0." not in v6
    assert "protocol kernel stickyip_kernel6 {" in text
    assert "  ipv6 { import none; export where source = RTS_BGP; };" in text
    assert "template bgp stickyip_peer6 {" in text
    assert "protocol bgp peer6_node_2 from stickyip_peer6 {\n  neighbor fd00:fab::2 as 64512;" \
        in text
    assert "protocol bgp peer_node_3 from stickyip_peer {" in text
    assert "peer6_node_3" not in text  # node-3 has no IPv6 address to peer with
    assert "fd00:fab::1 as" not in text  # no session to itself


def test_external_peers_get_a_session_each_with_their_own_as() -> None:
    from datapath.bird import parse_peer

    cfg = config_of(router_id="192.168.0.1", asn=64512, blocks=[], migrated=[],
                    peers={"node-2": {4: "192.168.0.2"}}, self_node="node-1",
                    external=[parse_peer("192.168.0.254 64513"), parse_peer("10.9.0.1 64512"),
                              parse_peer("192.168.0.2 64512")])  # node-2: mesh already
    text = render(cfg)
    assert "protocol bgp ext_192_168_0_254 from stickyip_peer" in text
    assert "neighbor 192.168.0.254 as 64513;" in text
    assert "neighbor 10.9.0.1 as 64512;" in text
    assert text.count("neighbor 192.168.0.2 ") == 1
    assert text.index("ext_10_9_0_1") < text.index("ext_192_168_0_254")  # sorted


@pytest.mark.parametrize("bad", ["192.0.2.1", "192.0.2.1 as 64513", "node-1 64513",
                                 "192.0.2.1 0", "192.0.2.1 4294967296"])
def test_malformed_peers_are_refused_with_the_expected_form(bad: str) -> None:
    from pydantic import ValidationError

    from datapath.bird import parse_peer
    from datapath.config import AgentSettings

    with pytest.raises(ValueError, match="BGP peer"):
        parse_peer(bad)
    with pytest.raises(ValidationError, match="BGP peer"):
        AgentSettings(bgp_peers=[bad])


def test_ipv6_external_peers_ride_the_ipv6_template_only_on_an_ipv6_node() -> None:
    from datapath.bird import parse_peer

    kw = dict(router_id="192.168.0.1", asn=64512, blocks=[], migrated=[],
              peers={"node-2": {4: "192.168.0.2", 6: "fd00:fab::2"}}, self_node="node-1",
              external=[parse_peer("2001:db8::fe 64513"), parse_peer("fd00:fab::2 64512")])
    text = render(config_of(ipv6=True, **kw))  # type: ignore[arg-type]
    assert "protocol bgp ext_2001_db8__fe from stickyip_peer6 {" in text
    assert "neighbor 2001:db8::fe as 64513;" in text
    assert text.count("neighbor fd00:fab::2 ") == 1  # node-2 is in the mesh already
    assert "2001:db8::fe" not in render(config_of(**kw))  # type: ignore[arg-type]
