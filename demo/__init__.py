"""The one-command local demo (``make demo`` / ``python -m demo``): the whole stickyip
system against the Kubernetes API stand-in, playing a StatefulSet story. Not product
code: like ``kubestandin`` it is not installed and runs from a checkout."""

from demo.errors import DemoError

__all__ = ["DemoError"]
