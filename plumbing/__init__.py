"""Cross-cutting plumbing every component shares: JSON logging (``plumbing.logs``),
listing output (``plumbing.output``), the servers' stop signal (``plumbing.signals``)
and the Kubernetes client, its error translation and its list+watch
(``plumbing.kube``). Independent of ``ipam`` and of every component."""

__all__: list[str] = []
