"""Rendered configs against real ExaBGP processes, in two network namespaces this test makes
(a veth pair; nothing leaves them): passwords with any printable character, including the
apostrophe that used to break ExaBGP's parser, give an MD5-signed session; the base64 form
gives the kernel the same key as a plain password."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from bgp.config import Peer, SpeakerConfig, environment, render
from bgp.speaker import die_with_parent
from tests.support.netns import sh, temp_netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

EXABGP = os.path.join(os.path.dirname(sys.executable), "exabgp")
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_api.py")
A, B = "192.0.2.1", "192.0.2.2"
WAIT = 60.0  # s, generous: never a timing assertion


@pytest.fixture
def pair():
    with temp_netns("wxa") as a, temp_netns("wxb") as b:
        sh(a, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
        sh(a, "ip", "addr", "add", f"{A}/24", "dev", "eth0")
        sh(b, "ip", "addr", "add", f"{B}/24", "dev", "eth0")
        sh(a, "ip", "link", "set", "eth0", "up")
        sh(b, "ip", "link", "set", "eth0", "up")
        work = tempfile.mkdtemp(prefix="wx-exabgp-")
        procs = []
        try:
            yield a, b, work, procs
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
            shutil.rmtree(work, ignore_errors=True)


def start(ns, work, name, router_id, peer, password, edit=None):
    events = os.path.join(work, f"{name}.events")
    config = SpeakerConfig(node=name, router_id=router_id, peers=(Peer(peer, 64512, password=password),),
                           api_argv=(sys.executable, PROBE, events), hold_time=9)
    text = render(config)
    if edit:
        text = edit(text)
    conf = os.path.join(work, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(text)
    env = dict(os.environ, **environment(config, os.path.join(work, f"{name}.log"), work))
    env["exabgp_api_pipename"] = f"wx-{name}-{os.getpid()}"
    out = open(os.path.join(work, f"{name}.out"), "ab")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, EXABGP, "server", conf], env=env,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent(os.getpid()))
    out.close()
    return proc, events


def wait_for(predicate, what):
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {WAIT}s"
        time.sleep(0.2)


def up(events, peer):
    try:
        text = open(events).read()
    except OSError:
        return False
    return any('"state": "up"' in line.replace('":"', '": "') and f'"peer": "{peer}"' in line.replace('":"', '": "')
               for line in text.splitlines())


def md5_failures(ns) -> int:
    text = sh(ns, "cat", "/proc/net/netstat").stdout.splitlines()
    for names, values in zip(text[::2], text[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:])).get("TCPMD5Failure", 0))
    return 0


PASSWORD = "it's \"a\" \\secret; {x} #1"


def test_a_password_with_quotes_and_backslashes_gives_a_signed_session(pair):
    a, b, work, procs = pair
    pa, ea = start(a, work, "a", A, B, PASSWORD)
    pb, eb = start(b, work, "b", B, A, PASSWORD)
    procs += [pa, pb]
    wait_for(lambda: up(ea, B) and up(eb, A), "the session")
    assert pa.poll() is None and pb.poll() is None


def test_the_base64_form_is_the_same_key_as_a_plain_password(pair):
    a, b, work, procs = pair
    pa, ea = start(a, work, "a", A, B, "plain-Secret_1")  # ours: base64
    plain = lambda text: text.replace("    md5-base64 true;\n", "").replace(  # noqa: E731
        'md5-password "cGxhaW4tU2VjcmV0XzE=";', 'md5-password "plain-Secret_1";')
    pb, eb = start(b, work, "b", B, A, "plain-Secret_1", edit=plain)
    procs += [pa, pb]
    assert 'md5-password "plain-Secret_1";' in open(os.path.join(work, "b.conf")).read()
    wait_for(lambda: up(ea, B) and up(eb, A), "the session")


def test_a_different_password_is_refused_by_the_kernel(pair):
    a, b, work, procs = pair
    before = md5_failures(b) + md5_failures(a)
    pa, ea = start(a, work, "a", A, B, PASSWORD)
    pb, eb = start(b, work, "b", B, A, PASSWORD + "!")
    procs += [pa, pb]
    wait_for(lambda: md5_failures(b) + md5_failures(a) > before, "an MD5 failure")  # the keys are in use
    assert not up(ea, B) and not up(eb, A)
