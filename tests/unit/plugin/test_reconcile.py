from plugin.reconcile import plan
from plugin.records import Endpoint

A, B, C = "a" * 64, "b" * 64, "c" * 64


def ep(id_, sandbox="/sb", v4=("10.0.0.1",)):
    return Endpoint(id=id_, network="n", host="h", ipv4=list(v4), sandbox=sandbox)


def test_orphans_are_removed_and_joined_kept():
    p = plan({"wrn" + A[:11]: 5, "wrn" + B[:11]: 6}, {"10.0.0.1": 5}, [ep(A)])
    assert p.remove == ["wrn" + B[:11]] and p.add_routes == {} and p.lost == []


def test_unjoined_endpoint_interface_is_an_orphan():
    p = plan({"wrn" + A[:11]: 5}, {}, [ep(A, sandbox=None)])
    assert p.remove == ["wrn" + A[:11]]


def test_missing_or_misdirected_routes_are_restored():
    p = plan({"wrn" + A[:11]: 5}, {"10.0.0.1": 9}, [ep(A, v4=("10.0.0.1", "10.0.0.2"))])
    assert p.add_routes == {A: ["10.0.0.1", "10.0.0.2"]}


def test_joined_endpoint_without_interface_is_reported():
    p = plan({}, {}, [ep(C)])
    assert p.lost == [C] and p.remove == [] and p.add_routes == {}
