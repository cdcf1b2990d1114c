"""NetworkPolicy (networking.k8s.io/v1) for pods on the node: pure computation of
identities, the ipcache and per-endpoint policy entries, and the manager that
applies their difference to the eBPF maps."""

from datapath.features.policy.compute import PolicyState, compute
from datapath.features.policy.manager import PolicyManager
from datapath.features.policy.models import NamespaceInfo, PodInfo

__all__ = ["NamespaceInfo", "PodInfo", "PolicyManager", "PolicyState", "compute"]
