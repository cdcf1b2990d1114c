"""The ``stickyip`` command: the operator CLI and the entry point of every component.
Nothing imports this package; code the components share lives in ``plumbing``."""
