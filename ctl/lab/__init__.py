"""warren-lab: a multi-host Docker lab on one machine, for Warren's end-to-end tests.

Each "host" is a network namespace plus a private mount and UTS namespace
(held by an anchor process) running its own dockerd; all hosts share an
underlay bridge in another namespace that also runs etcd. Nothing is
connected to the root network namespace. Every host runs the lab's Docker
engine (``20.10``, ``26`` or ``28``, fetched into a cache by ``engines``),
with Docker's own firewall on unless ``docker_firewall`` is off
(``hostengine``). See ``ctl.lab.lab`` for the design
and ``ctl.lab.main`` for the command line (``python -m ctl.lab``).

Python API::

    from ctl.lab import Lab
    lab = Lab("t1")
    lab.up(2, node=False)         # engine=$WARREN_LAB_ENGINE or "28", docker_firewall on
    lab.exec("host1", ["ping", "-c1", lab.host(2).ipv4])
    lab.docker("host1", ["run", "--rm", "--init", "--net=none", IMAGE, "echo", "hi"])
    lab.attach("t1-out")          # another netns on the underlay bridge
    lab.status()                  # the same dict as ``warren-lab status --json``
    lab.down()
"""
from .lab import Lab, LabError
from .layout import DEFAULT_NAME, GUARD_PROTO, IMAGE, STATE_ROOT, HostLayout, Layout

__all__ = ["Lab", "LabError", "Layout", "HostLayout", "DEFAULT_NAME", "GUARD_PROTO", "IMAGE",
           "STATE_ROOT"]
