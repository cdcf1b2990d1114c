"""The pools and reservation keys the IPAM tests share: one dual-stack pair of pools
(IPv4 /24 in /28 blocks, IPv6 /64 in /122 blocks) and the first StatefulSet ordinals."""

from __future__ import annotations

from ipam import PoolSpec, ReservationKey

V4 = PoolSpec(name="v4", cidr="10.20.0.0/24", block_size=28)
V6 = PoolSpec(name="v6", cidr="fd00:20::/64", block_size=122)

K0 = ReservationKey.of("prod", "db", 0)
K1 = ReservationKey.of("prod", "db", 1)
