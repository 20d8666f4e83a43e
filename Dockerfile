# The Warren node image: `warrenctl node start --foreground` (plugin server, BGP speaker).
#
# Built by scripts/build-image, never straight from the repository: no network is available inside
# the build (it runs with --network none), so everything comes from the host:
#
# * the base image is Debian bookworm made with `debootstrap --variant=minbase` on the host, with
#   the system packages the node runs (python3, iproute2, iptables, ipset) already included and
#   docs, locales and apt lists removed; scripts/build-image imports it under the tag FROM names
#   below, keyed by its package list, when it is missing;
# * `wheels/` (the build context) holds Warren's wheel, every pinned dependency (ExaBGP included)
#   and pip, all made with `pip wheel` on the host by the same Python minor version (3.11).
#
# Two stages, so the wheels and pip never reach the final image: the first installs the venv,
# the second copies only the venv. Runtime privileges, mounts and environment: docs/packaging.md.

FROM warren/node-base:bookworm AS build
COPY wheels /wheels
# pip runs straight from its wheel; it is not installed into the venv.
RUN set -- /wheels/pip-*.whl \
 && python3 -m venv --without-pip /opt/warren/venv \
 && /opt/warren/venv/bin/python "$1/pip" install --no-index --find-links /wheels \
        --no-cache-dir --disable-pip-version-check --no-warn-script-location warren \
 && /opt/warren/venv/bin/python -c "import ctl.main, plugin.wsgi, bgp.speaker, bgp.api, exabgp"

FROM warren/node-base:bookworm
ARG VERSION=unknown
LABEL org.opencontainers.image.title="warren-node" \
      org.opencontainers.image.description="Warren node: Docker network and IPAM plugin, BGP speaker" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /opt/warren /opt/warren
# The entry point maps the image's variables to `node start` flags and, where the node's procfs
# (WARREN_PROC_ROOT, default /proc) has the read-only /proc/sys Docker gives containers, remounts it
# writable (possible with CAP_SYS_ADMIN only; the managed plugin instead mounts the host's
# /proc/sys/net under WARREN_PROC_ROOT=/host/proc, see docs/packaging.md).
RUN printf '%s\n' \
        '#!/bin/sh' \
        '# warren-node: entry point of the node image and of the managed plugin (see the Dockerfile).' \
        'set -e' \
        'if [ ! -w "${WARREN_PROC_ROOT:-/proc}/sys/net/ipv4/ip_forward" ]; then' \
        '    mount -o remount,rw,bind /proc/sys 2>/dev/null \' \
        '        || echo "warren-node: /proc/sys is read-only (needs CAP_SYS_ADMIN or systempaths=unconfined)" >&2' \
        'fi' \
        'set -- node start --foreground "$@"' \
        '[ -z "${WARREN_NODE_IP:-}" ] || set -- "$@" --ip "$WARREN_NODE_IP"' \
        '[ -z "${WARREN_NODE_IP6:-}" ] || set -- "$@" --ip6 "$WARREN_NODE_IP6"' \
        'exec warrenctl "$@"' \
        > /usr/local/bin/warren-node \
 && chmod 755 /usr/local/bin/warren-node \
 && ln -s /opt/warren/venv/bin/warrenctl /usr/local/bin/warrenctl \
 && mkdir -p /run/docker/plugins /run/warren /var/log/warren /etc/warren
ENV PATH=/opt/warren/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/local/bin/warren-node"]
