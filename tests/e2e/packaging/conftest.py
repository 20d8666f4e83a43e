"""Fixtures of the packaging tests: one 2-host lab without Warren nodes, and the node image.

The image is built once for the package by ``scripts/build-image`` against host1's dockerd (its
base image imported from the cached debootstrap tarball, see docs/packaging.md) and copied to
host2 with ``docker save | docker load``. The lab always comes down, even on failure.
"""
from __future__ import annotations

import secrets
import time

import pytest

from ctl.lab import Lab
from tests.e2e.helpers import dk

from .common import NODE_IMAGE, copy_image, script

HOSTS = ("host1", "host2")


@pytest.fixture(scope="package")
def lab():
    lab = Lab("k" + secrets.token_hex(3))
    try:
        lab.up(len(HOSTS), node=False)
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="package")
def image(lab) -> dict:
    """The node image on every lab host: its tag, version, size and build time."""
    start = time.monotonic()
    result = script(lab, "host1", "build-image")
    assert result.returncode == 0, f"scripts/build-image failed: {result.stderr[-2000:]}"
    built = time.monotonic() - start
    tag = result.stdout.split()[0]                      # "warren/node:0.1.0 167 MB"
    for host in HOSTS[1:]:
        copy_image(lab, tag, "host1", host)
        dk(lab, host, "tag", tag, NODE_IMAGE)
    size = int(dk(lab, "host1", "image", "inspect", "-f", "{{.Size}}", tag).stdout)
    return {"tag": tag, "version": tag.split(":", 1)[1], "size": size, "build_seconds": built}
