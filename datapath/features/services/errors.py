"""Errors of service load balancing (a branch of the datapath error tree)."""

from __future__ import annotations

from datapath.errors import DatapathError


class ServicesError(DatapathError):
    """Root of service load-balancing errors."""


class InvalidService(ServicesError):
    """A Service or EndpointSlice object lacks what translation needs."""
