"""The one way stickyip talks to the Kubernetes API (the official, blocking client).

- ``plumbing.kube.client``: ``KubeSettings`` (``STICKYIP_KUBE_*``) and
  ``api_client(settings)``, the client factory (explicit host, in-cluster, kubeconfig;
  TLS always verified for https://).
- ``plumbing.kube.errors``: ``KubeError`` and its leaves (``NotFound``, ``Conflict``,
  ``Gone``, ``Forbidden``, ``Invalid``, ``Unavailable``, ``ConfigError``,
  ``NoCredentials``); ``translated(what)`` turns whatever the official client raises
  inside the block into them, ``translate(exc, what)`` one caught exception.
- ``plumbing.kube.rest``: ``RestClient``, raw JSON requests (``request``, ``get``,
  paged ``list``, ``watch``, ``wait_ready``) raising only ``KubeError``.
- ``plumbing.kube.watch``: ``Reflector``, list+watch of one collection into a
  ``Sink`` (``replace(items)`` after each list, ``apply(type, obj)`` per change) with
  bookmarks, re-list on 410 and backoff; ``Mirror`` (a sink that hands on changes
  only) and ``LoopSink`` (a sink that hands on to an asyncio loop).

A component that watches, e.g. the agent's Services::

    rest = RestClient(api_client(KubeSettings()))
    mirror = Mirror(lambda etype, svc: ...)           # ADDED / MODIFIED / DELETED
    Reflector(rest, "/api/v1/services", mirror, name="services").start()
"""

__all__ = ["client", "errors", "rest", "watch"]
