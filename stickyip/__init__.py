"""The ``stickyip`` and its entry points: the operator CLI and the command of every
component. Nothing else imports this package; shared code lives in ``plumbing``."""
