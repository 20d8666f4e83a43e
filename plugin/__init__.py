"""Warren's Docker plugin: NetworkDriver + IpamDriver over HTTP on a unix socket.

* :mod:`plugin.app`        - Flask app: one thin handler per Docker endpoint, one error path
* :mod:`plugin.networks`   - networks, endpoints, Join/Leave (domain)
* :mod:`plugin.ipamdriver` - Docker pools/addresses on Warren IPAM (domain)
* :mod:`plugin.dataplane`  - veth pairs, /32 routes, proxy ARP (pyroute2)
* :mod:`plugin.reconcile`  - kernel vs etcd at start-up
* :mod:`plugin.wsgi`       - the plugin server (one process, a thread per request)
"""
