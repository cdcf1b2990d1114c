"""The one way stickyip talks to the Kubernetes API.

- ``plumbing.kube.client``: ``KubeSettings`` and ``api_client()``, the client factory.
"""

__all__: list[str] = []
