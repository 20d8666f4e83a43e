"""Records the plugin keeps in etcd, keyed by Docker's ids (see datastore.keys).

Docker does not re-send CreateNetwork after a plugin restart, and with
``Scope: local`` other hosts never see it at all, so everything a later call
needs is stored. The record classes are shared with the policy agent and the
CLI, so they live in :mod:`ipam.workloads`; this module names them for the
plugin's code.
"""
from ipam.workloads import Endpoint, Network

__all__ = ["Endpoint", "Network"]
