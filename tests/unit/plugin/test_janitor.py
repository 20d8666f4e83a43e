"""The janitor's pure parts: records and IPAM vs dockerd's view -> what to remove."""
import pytest

from ipam.workloads import Endpoint, host_ifname
from plugin.janitor import DockerView, Held, docker_view, owner, plan, settings
from plugin.names import DockerError, DockerNotFound

A, B, C, D = "a" * 64, "b" * 64, "c" * 64, "d" * 64
NET, CONTAINER = "n" * 64, "f" * 64
NOW, GRACE = 10_000.0, 60.0
OLD, YOUNG = NOW - 3600, NOW - 5


def ep(id_, v4="10.0.0.1", host="h1", sandbox="/var/run/docker/netns/x", **kw):
    return Endpoint(id=id_, network=kw.pop("network", NET), host=host, ipv4=[v4] if v4 else [],
                    sandbox=sandbox, **kw)


def held(address, since=OLD, handle=None, host="h1", purpose="docker"):
    return {address: Held(address, handle or f"docker-{address}", host, purpose, since)}


def view(endpoints=(), containers=None):
    return DockerView(frozenset({NET}), frozenset(endpoints), containers or {})


def test_an_endpoint_dockerd_lists_is_kept_and_an_old_orphan_goes_with_its_address():
    records = [ep(A, "10.0.0.1"), ep(B, "10.0.0.2")]
    allocs = {**held("10.0.0.1"), **held("10.0.0.2")}
    p = plan("h1", records, view([A]), allocs, [], NOW, GRACE)
    assert [e.id for e in p.endpoints] == [B]
    assert [h.address for h in p.release] == ["10.0.0.2"]
    assert p.waiting == []


def test_an_orphan_in_its_grace_period_waits():
    """CreateEndpoint writes the record before dockerd stores the endpoint: a young
    allocation (RequestAddress just before) means it may be in flight."""
    p = plan("h1", [ep(A)], view(), held("10.0.0.1", since=YOUNG), [], NOW, GRACE)
    assert p.endpoints == [] and p.waiting == [A] and p.release == []


def test_live_restore_nothing_a_running_container_uses_is_touched():
    records = [ep(A, "10.0.0.1"), ep(B, "10.0.0.2"),
               ep(C, "10.0.0.3", network="", container=CONTAINER, ifname="eth1")]
    allocs = {**held("10.0.0.1"), **held("10.0.0.2"),
              **held("10.0.0.3", handle=f"container-{C}", purpose="container", since=0)}
    interfaces = [host_ifname(i) for i in (A, B, C)]
    p = plan("h1", records, view([A, B], {CONTAINER: "running"}), allocs, [], NOW, GRACE, interfaces)
    assert p.empty and p.waiting == []


def test_container_add_records_follow_their_container():
    rec = ep(C, "10.0.0.3", network="", container=CONTAINER, ifname="eth1", sandbox="/proc/1/ns/net")
    allocs = held("10.0.0.3", handle=f"container-{C}", purpose="container", since=0)
    for state in ("exited", "created", "dead", None):
        containers = {CONTAINER: state} if state else {}
        p = plan("h1", [rec], view([], containers), allocs, [], NOW, GRACE)
        assert [e.id for e in p.endpoints] == [C], state
        assert [h.handle for h in p.release] == [f"container-{C}"]
    for state in ("running", "paused", "restarting"):
        assert plan("h1", [rec], view([], {CONTAINER: state}), allocs, [], NOW, GRACE).empty


def test_an_address_another_record_names_is_never_released():
    """The leaked record's address was released and handed to a newer container: the old
    record goes, the address stays with the new one."""
    records = [ep(A, "10.0.0.1"), ep(B, "10.0.0.1")]
    p = plan("h1", records, view([B]), held("10.0.0.1"), [], NOW, GRACE)
    assert [e.id for e in p.endpoints] == [A] and p.release == []
    # ... also when the newer record is another host's (a borrowed address)
    records = [ep(A, "10.0.0.1"), ep(B, "10.0.0.1", host="h2")]
    assert plan("h1", records, view(), held("10.0.0.1"), [], NOW, GRACE).release == []


def test_an_orphan_whose_address_went_to_a_create_in_flight_waits():
    """Released, then assigned again (young allocation, record not written yet)."""
    p = plan("h1", [ep(A)], view(), held("10.0.0.1", since=YOUNG, handle="docker-new"), [], NOW, GRACE)
    assert p.endpoints == [] and p.waiting == [A] and p.release == []


def test_an_orphan_whose_addresses_are_free_is_old():
    p = plan("h1", [ep(A)], view(), {}, [], NOW, GRACE)
    assert [e.id for e in p.endpoints] == [A] and p.release == []


def test_only_the_own_kind_of_allocation_is_released():
    p = plan("h1", [ep(A)], view(), held("10.0.0.1", purpose="tunnel", handle="tunl"), [], NOW, GRACE)
    assert [e.id for e in p.endpoints] == [A] and p.release == []


def test_lone_docker_allocations_of_this_host_are_released_after_the_grace():
    allocs = {**held("10.0.0.1"),                               # leaked: released
              **held("10.0.0.2", since=YOUNG),                  # RequestAddress in flight
              **held("10.0.0.3", host="h2"),                    # another host's
              **held("10.0.0.4"),                               # an --aux-address
              **held("10.0.0.5", purpose="container", handle="container-x"),
              **held("10.0.0.6"),                               # named by a record
              **held("10.0.0.7", purpose="tunnel", handle="tunl")}
    p = plan("h1", [ep(A, "10.0.0.6")], view([A]), allocs, ["10.0.0.4"], NOW, GRACE)
    assert [h.address for h in p.release] == ["10.0.0.1"]


def test_other_hosts_records_are_never_judged():
    p = plan("h1", [ep(A, host="h2")], view(), held("10.0.0.1", host="h2"), [], NOW, GRACE)
    assert p.empty and p.waiting == []


def test_stale_gateway_slots_and_stray_interfaces():
    records = [ep(A, "10.0.0.1"), ep(B, "10.0.0.2", sandbox=None), ep(C, "10.0.0.3")]
    slots = {"/s/1": A, "/s/2": D, "/t/1": C}
    interfaces = [host_ifname(i) for i in (A, B, C, D)]
    allocs = {**held("10.0.0.1"), **held("10.0.0.2"), **held("10.0.0.3")}
    p = plan("h1", records, view([A, B]), allocs, [], NOW, GRACE, interfaces, slots)
    assert [e.id for e in p.endpoints] == [C]
    assert p.slots == ["/s/2", "/t/1"]                 # D has no record; C's record goes
    # B is not joined (its Leave's delete never ran), D has no record; C's goes with C
    assert p.interfaces == [host_ifname(B), host_ifname(D)]


def test_settings():
    assert settings({}) == (60.0, 60.0)
    assert settings({"WARREN_JANITOR_INTERVAL": "5", "WARREN_JANITOR_GRACE": "0"}) == (5.0, 0.0)
    assert settings({"WARREN_JANITOR_INTERVAL": "off"})[0] == 0.0
    for bad in ("soon", "-1"):
        with pytest.raises(ValueError, match="WARREN_JANITOR_INTERVAL"):
            settings({"WARREN_JANITOR_INTERVAL": bad})


class FakeDocker:
    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def __call__(self, path):
        self.asked.append(path)
        answer = self.answers.get(path)
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            raise DockerNotFound(f"no {path}")
        return answer


def test_docker_view_reads_the_endpoints_of_the_networks_asked_about():
    other = "o" * 64
    gone = "g" * 64
    get = FakeDocker({
        "/networks": [{"Id": NET}, {"Id": other}, {"Id": gone}],
        f"/networks/{NET}": {"Containers": {CONTAINER: {"EndpointID": A}, f"ep-{B}": {"EndpointID": B}}},
        "/containers/json?all=1": [{"Id": CONTAINER, "State": "running"}, {"Id": "x", "State": "exited"}],
    })
    v = docker_view([NET, gone, "z" * 64], get)
    assert v.endpoints == {A, B}                     # joined and created-not-joined
    assert v.networks == {NET, other}                # gone vanished between list and inspect
    assert v.containers == {CONTAINER: "running", "x": "exited"}
    assert f"/networks/{other}" not in get.asked     # only networks our records name


def test_docker_view_never_partial():
    get = FakeDocker({"/networks": [{"Id": NET}], f"/networks/{NET}": DockerError("boom")})
    with pytest.raises(DockerError):
        docker_view([NET], get)


def test_owner():
    get = FakeDocker({
        f"/networks/{NET}": {"Containers": {CONTAINER: {"EndpointID": A}, f"ep-{B}": {"EndpointID": B}}},
        f"/containers/{CONTAINER}/json": {"State": {"Running": True}},
    })
    assert owner(ep(A), get) == (CONTAINER, True)
    assert owner(ep(B), get) == ("", False)
    assert owner(ep(C), get) is None
    assert owner(ep(D, network="q" * 64), get) is None
    add = ep(C, network="", container=CONTAINER, ifname="eth1")
    assert owner(add, get) == (CONTAINER, True)
    assert owner(ep(C, network="", container="gone", ifname="eth1"), get) is None


def test_only_this_hosts_networks_gone_from_dockerd_and_unused_are_listed():
    gone, used, other, unknown = "g" * 64, "u" * 64, "o" * 64, "k" * 64
    records = [ep(A, network=used)]
    networks = {NET: "h1", gone: "h1", used: "h1", other: "h2", unknown: None}
    p = plan("h1", records, view([A]), held("10.0.0.1"), [], NOW, GRACE, networks=networks)
    assert p.networks == [gone]
    # an orphan record on a gone network goes in the same round, and the network with it
    p = plan("h1", records, view([]), held("10.0.0.1"), [], NOW, GRACE, networks=networks)
    assert [e.id for e in p.endpoints] == [A] and p.networks == [gone, used]


def test_an_address_ipam_reimported_for_the_orphan_goes_with_it():
    """The record named a freed address, so IPAM holds it for the record (purpose=record)."""
    from ipam.allocator import record_handle
    allocs = held("10.0.0.1", handle=record_handle(A), purpose="record")
    p = plan("h1", [ep(A)], view(), allocs, [], NOW, GRACE)
    assert [e.id for e in p.endpoints] == [A] and [h.handle for h in p.release] == [record_handle(A)]
    # ... and one whose record went without it is swept like a lone Docker address
    p = plan("h1", [], view(), allocs, [], NOW, GRACE)
    assert [h.address for h in p.release] == ["10.0.0.1"]
