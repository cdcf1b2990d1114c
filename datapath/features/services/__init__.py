"""Service load balancing for pods on the node (a kube-proxy replacement): pure
translation of Services and EndpointSlices into map entries, Maglev tables, and the
manager that applies only the entries a change touches."""

from datapath.features.services.maglev import maglev_table
from datapath.features.services.manager import ServiceManager
from datapath.features.services.models import Backend, ServiceKey, ServicePort
from datapath.features.services.translate import translate

__all__ = ["Backend", "ServiceKey", "ServiceManager", "ServicePort", "maglev_table",
           "translate"]
