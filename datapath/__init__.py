"""The stickyip node datapath: the CNI plugin, the node agent, routes, BIRD and eBPF.

Kept import-free on purpose: ``stickyip-cni`` imports this package on every call and
must start fast. Import the submodules you need (``datapath.agent``, ``datapath.cni``).
"""

__all__: list[str] = []
