"""Errors of the node datapath: the one table of CNI error codes (the agent and the
plugin both take theirs from here), one root, and leaves carrying the code a runtime
sees when the failure ends a CNI request. Imports nothing: the plugin loads it on
every call."""

from __future__ import annotations

#: CNI spec error codes (https://www.cni.dev/docs/spec/#error)
CNI_INCOMPATIBLE_VERSION = 1
CNI_UNSUPPORTED_FIELD = 2
CNI_UNKNOWN_CONTAINER = 3
CNI_INVALID_ENV = 4
CNI_IO_FAILURE = 5
CNI_DECODE_FAILURE = 6
CNI_INVALID_CONFIG = 7
CNI_TRY_AGAIN = 11
CNI_NOT_AVAILABLE = 50
CNI_LIMITED_CONNECTIVITY = 51
#: Plugin-specific codes (>= 100).
CNI_INTERFACE_EXISTS = 100
CNI_NOT_HOME = 101
CNI_CHECK_FAILED = 102
CNI_INTERNAL = 103
CNI_ADDRESS_CONFLICT = 104


class DatapathError(Exception):
    """Root of every datapath error. ``code`` is the CNI error code to report."""

    code = CNI_INTERNAL

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class UnknownContainer(DatapathError):
    code = CNI_UNKNOWN_CONTAINER


class InvalidEnvironment(DatapathError):
    code = CNI_INVALID_ENV


class InvalidConfig(DatapathError):
    code = CNI_INVALID_CONFIG


class TryAgain(DatapathError):
    """A transient failure (store unreachable, agent busy): the runtime should retry."""

    code = CNI_TRY_AGAIN


class NotAvailable(DatapathError):
    """STATUS: the plugin cannot serve ADD now (the IPAM store is unreachable)."""

    code = CNI_NOT_AVAILABLE


class InterfaceExists(DatapathError):
    """ADD found the interface already present in the pod or in the agent's records."""

    code = CNI_INTERFACE_EXISTS


class NotHome(DatapathError):
    """The pod's sticky reservation is homed on another node."""

    code = CNI_NOT_HOME


class UnclearPod(DatapathError):
    """A pod asks for a fixed address but does not say which ordinal it fills (the
    webhook refuses such pods: it was bypassed)."""

    code = CNI_INTERNAL


class AddressConflict(DatapathError):
    """Another host on the node's links answered for the address ADD was to bring up."""

    code = CNI_ADDRESS_CONFLICT


class CheckFailed(DatapathError):
    """CHECK found the attachment differing from what ADD set up."""

    code = CNI_CHECK_FAILED


class NetlinkFailure(DatapathError):
    """A netlink request (links, addresses, routes, tc) failed."""

    code = CNI_IO_FAILURE


class BpfFailure(DatapathError):
    """Compiling, loading or pinning an eBPF program or map failed."""

    code = CNI_IO_FAILURE


class BirdFailure(DatapathError):
    """Writing the BIRD config or reloading BIRD failed."""

    code = CNI_IO_FAILURE
