"""Errors of NetworkPolicy enforcement (a branch of the datapath error tree)."""

from __future__ import annotations

from datapath.errors import DatapathError


class PolicyError(DatapathError):
    """Root of NetworkPolicy errors."""


class InvalidPolicy(PolicyError):
    """A NetworkPolicy that the API should have refused (bad CIDR, bad port range)."""
