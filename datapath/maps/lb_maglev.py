"""``stickyip_maglev``: (service id, 0..M-1) -> backend id, the Maglev lookup table of
a service port (same layout as ``stickyip_slot``)."""

from __future__ import annotations

from datapath.maps.layout import MapLayout
from datapath.maps.lb_slots import Key, Value

NAME = "stickyip_maglev"
#: lookup-table size compiled into the program (``LB_MAGLEV_M``, a prime)
MAGLEV_M = 251

LAYOUT = MapLayout(NAME, Key, Value, c_key="struct lb_slot_key", c_value="struct lb_slot_val")
