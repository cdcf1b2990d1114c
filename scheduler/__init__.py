"""stickyip package."""
