"""warren-lab end-to-end tests: real namespaces, dockerd and etcd; root only."""
from __future__ import annotations

import os
import shutil

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs root, dockerd and etcd (real namespaces)")


def missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "warren-lab e2e tests need root"
    for tool in ("/usr/sbin/dockerd", "/bin/busybox"):
        if not os.access(tool, os.X_OK):
            return f"{tool} is not installed"
    for tool in ("etcd", "nsenter", "unshare", "setsid", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None
