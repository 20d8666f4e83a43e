"""Warren's Docker plugin: NetworkDriver + IpamDriver over HTTP on a unix socket.

* :mod:`plugin.app`        - Flask app: one thin handler per Docker endpoint, one error path
* :mod:`plugin.networks`   - networks, endpoints, Join/Leave (domain)
* :mod:`plugin.ipamdriver` - Docker pools/addresses on Warren IPAM (domain)
* :mod:`plugin.netoptions` - CreateNetwork's options: Docker's labels and -o
* :mod:`plugin.publishing` - -p: ProgramExternalConnectivity, Revoke, EndpointOperInfo (domain)
* :mod:`plugin.portplan`   - -p: port maps, stored mappings, host-port choice (pure)
* :mod:`plugin.hostports`  - -p: host ports held by bound sockets, as Docker holds them
* :mod:`plugin.ports`      - -p: the WARREN-DNAT/HAIRPIN nat chains (one writer)
* :mod:`plugin.portproxy`  - -p: the userland proxy for localhost and 6-to-4
* :mod:`plugin.conntrack`  - -p: forgetting UDP flows of a host port that changed hands
* :mod:`plugin.dataplane`  - veth pairs, /32 routes, proxy ARP (pyroute2)
* :mod:`plugin.reconcile`  - kernel vs etcd at start-up
* :mod:`plugin.wsgi`       - the plugin server (one process, a thread per request)
"""
