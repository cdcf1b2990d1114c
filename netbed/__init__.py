"""The one network-namespace test bed (root only; not part of the product): shell and
namespace bookkeeping (:mod:`.shell`), a bridged fabric of node namespaces
(:mod:`.fabric`), loopback relays into them (:mod:`.relay`), agent and CNI command
lines (:mod:`.agents`), the server/prober program run in pods (:mod:`.pods`), the
multi-node bed with real agents (:mod:`.testbed`), the stand-in kubelet that starts
bound pods through a pod runtime (:mod:`.kubelet`) and the single-node topology of the
service and policy tests (:mod:`.topology`). Used by the demo, the privileged tests and
the benchmarks. Kept import-free: import the module you need."""

__all__: list[str] = []
