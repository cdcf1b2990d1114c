"""Scheduler data: the node and pod facts the decisions need, read once from
Kubernetes JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NewType, TypedDict

from ipam.models import NodeName

PodUid = NewType("PodUid", str)
#: ``namespace/name`` of a pod.
PodRef = NewType("PodRef", str)
#: Raw Kubernetes JSON as the API serves it.
KubeObject = dict[str, Any]

TAINT_OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"


class NodeSelectorRequirement(TypedDict, total=False):
    key: str
    operator: str
    values: list[str]


class NodeSelectorTerm(TypedDict, total=False):
    matchExpressions: list[NodeSelectorRequirement]
    matchFields: list[NodeSelectorRequirement]


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    operator: str
    value: str
    effect: str


@dataclass(frozen=True, slots=True)
class Resources:
    """CPU in millicores, memory in bytes."""

    cpu_m: int = 0
    memory: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_m + other.cpu_m, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_m - other.cpu_m, self.memory - other.memory)


@dataclass(slots=True)
class NodeInfo:
    name: NodeName
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    #: When the Ready condition last changed (epoch seconds; 0 when unknown).
    ready_since: float = 0.0
    unschedulable: bool = False
    allocatable: Resources = field(default_factory=Resources)

    @property
    def out_of_service(self) -> bool:
        return any(t.key == TAINT_OUT_OF_SERVICE for t in self.taints)


@dataclass(slots=True)
class PodInfo:
    uid: PodUid
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    node_name: str = ""
    scheduler_name: str = ""
    requests: Resources = field(default_factory=Resources)
    node_selector: dict[str, str] = field(default_factory=dict)
    required_terms: list[NodeSelectorTerm] = field(default_factory=list)
    tolerations: tuple[Toleration, ...] = ()
    #: Owning StatefulSet name and this pod's ordinal, when it has one
    #: (``ipam.contract.slot_of``).
    statefulset: str = ""
    ordinal: int = -1
    #: Why the ordinal of a StatefulSet pod cannot be told (its sources disagree).
    slot_problem: str = ""
    deleting: bool = False
    phase: str = ""
    resource_version: str = ""

    @property
    def ref(self) -> PodRef:
        return PodRef(f"{self.namespace}/{self.name}")

    @property
    def terminated(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(slots=True)
class StatefulSetInfo:
    namespace: str
    name: str
    replicas: int
    uid: str = ""
