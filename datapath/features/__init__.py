"""Per-endpoint datapath features beyond the agent's own plumbing: service load
balancing (:mod:`.services`) and NetworkPolicy (:mod:`.policy`), the endpoint hook
that attaches their programs to pod veths (:mod:`.hook`, loaded with
``stickyip agent --hook datapath.features.hook:hook``) and their Kubernetes feed
(:mod:`.kube`). Kept import-free: import the submodule you need."""

__all__: list[str] = []
