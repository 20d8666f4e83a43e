"""warren-lab engines (ctl/lab/engines.py): the pure parts, without apt or a network.

Apt sources parsing (both formats) and the choice of the Debian mirror, the private
sources.list, version naming, the manifest round trip and its rejection of an incomplete
cache. Fetching itself is exercised by tests/e2e/lab/test_engines.py.
"""
from __future__ import annotations

import json
import os

import pytest

from ctl.lab import engines
from ctl.lab.engines import EngineError, Source

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_deb822_stanzas():
    srcs = engines.parse_deb822(DEB822)
    assert srcs == [
        Source("deb", "http://deb.debian.org/debian", ("bookworm", "bookworm-updates"), ("main",),
               "/usr/share/keyrings/debian-archive-keyring.gpg"),
        Source("deb", "http://deb.debian.org/debian-security", ("bookworm-security",), ("main",),
               "/usr/share/keyrings/debian-archive-keyring.gpg"),
    ]
    assert engines.debian_mirror(srcs).uri == "http://deb.debian.org/debian"


def test_deb822_disabled_stanzas_several_uris_and_inline_keys():
    text = ("Types: deb deb-src\nURIs: http://a.example/debian http://b.example/debian\n"
            "Suites: trixie\nComponents: main contrib\n"
            "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n\n"
            "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n")
    srcs = engines.parse_deb822(text)
    assert [(s.type, s.uri) for s in srcs] == [
        ("deb", "http://a.example/debian"), ("deb", "http://b.example/debian"),
        ("deb-src", "http://a.example/debian"), ("deb-src", "http://b.example/debian")]
    assert all(s.signed_by is None and s.components == ("main", "contrib") for s in srcs)


def test_one_line_format_with_options_and_comments():
    text = ("# comment\n"
            "deb-src http://src.example/debian bookworm main\n"
            "deb http://security.debian.org/debian-security bookworm-security main\n"
            "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib # x\n"
            "deb http://mirror.example/debian bookworm-updates main\n")
    srcs = engines.parse_one_line(text)
    assert len(srcs) == 4
    assert srcs[2] == Source("deb", "http://mirror.example/debian", ("bookworm",), ("main", "contrib"),
                             "/k.gpg")
    # Neither deb-src, nor security, nor a -updates suite is the mirror.
    assert engines.debian_mirror(srcs) == srcs[2]


def test_no_mirror_is_a_clear_error():
    only_security = engines.parse_one_line("deb http://deb.debian.org/debian-security bookworm-security main")
    with pytest.raises(EngineError, match="no Debian mirror found.*WARREN_DEBIAN_MIRROR"):
        engines.debian_mirror(only_security)
    with pytest.raises(EngineError):
        engines.debian_mirror([])


def test_private_sources_line_keeps_mirror_and_key_changes_suite():
    src = engines.parse_deb822(DEB822)[0]
    assert engines.sources_line(src, "sid") == \
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main\n"
    bare = Source("deb", "http://m.example/debian", ("bookworm",), ("main",))
    assert engines.sources_line(bare, "trixie") == "deb http://m.example/debian trixie main\n"


def test_mirror_env_override(monkeypatch):
    monkeypatch.setenv(engines.MIRROR_ENV, "http://override.example/debian")
    assert engines.mirror().uri == "http://override.example/debian"


@pytest.mark.parametrize("version,major", [
    ("28.5.2+dfsg4-5", "28"), ("26.1.5+dfsg1-9+deb13u1+b1", "26"),
    ("20.10.24+dfsg1-1+deb12u1+b6", "20.10"), ("1:29.0.1-1", "29")])
def test_major_of(version, major):
    assert engines.major_of(version) == major


def test_unknown_engine_is_one_line():
    with pytest.raises(EngineError) as err:
        engines.spec("27")
    assert str(err.value) == "unknown engine '27' (choose one of: 20.10, 26, 28)"
    assert engines.DEFAULT_ENGINE == "28" and set(engines.ENGINES) == {"20.10", "26", "28"}


def _manifest(root: str, name: str = "28", **change) -> str:
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "bin"))
    for exe in ("dockerd", "docker"):
        path = os.path.join(d, exe)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(path, 0o755)
    data = dict(name=name, dir=d, suite="sid", mirror="http://m.example/debian",
                packages={"docker.io": "28.5.2+dfsg4-5"}, dockerd=os.path.join(d, "dockerd"),
                docker=os.path.join(d, "docker"), compose=None, dockerd_version="Docker version 28.5.2",
                fetched=1.0, format=engines.MANIFEST_FORMAT, extra={})
    data.update(change)
    with open(os.path.join(d, engines.MANIFEST), "w") as f:
        json.dump(data, f)
    return d


def test_manifest_round_trip(tmp_path):
    d = _manifest(str(tmp_path))
    eng = engines.load("28", str(tmp_path))
    assert eng is not None and eng.packages == {"docker.io": "28.5.2+dfsg4-5"}
    assert eng.bin_dir == os.path.join(d, "bin") and eng.cli_plugins is None
    # ensure() returns a cached engine without fetching anything (and without root).
    assert engines.ensure("28", root=str(tmp_path)) == eng


def test_incomplete_or_foreign_cache_is_not_an_engine(tmp_path):
    assert engines.load("26", str(tmp_path)) is None
    d = _manifest(str(tmp_path), format=0)
    assert engines.load("28", str(tmp_path)) is None
    os.remove(os.path.join(d, engines.MANIFEST))
    os.rmdir(os.path.join(d, "bin"))
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    os.rmdir(d)
    d = _manifest(str(tmp_path))
    os.remove(os.path.join(d, "dockerd"))
    assert engines.load("28", str(tmp_path)) is None
