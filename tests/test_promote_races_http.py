"""Promote races over real HTTP on the session's Ray Serve: two clients promoting at the same moment get
one 200 and one 409 naming the winner; a DELETE racing a promote leaves a deleted version deleted."""
from __future__ import annotations

import random
import threading
import time

import pytest

from tests.conftest import make_tarball


@pytest.fixture(scope="module")
def version_tar(base_version, tmp_path_factory):
    return make_tarball(base_version, tmp_path_factory.mktemp("race-upload") / "version.tar.gz")


def upload(c, service, domain, tar, activate=False) -> str:
    r = c.post(f"/v1/domains/{domain}/versions", params={"activate": activate}, content=tar.read_bytes(),
               headers={**service.admin, "content-type": "application/gzip"})
    assert r.status_code == 201, r.text
    return r.json()["version"]


def at_once(service, *calls):
    """Each call gets its own client (two callers, two connections), all start together."""
    out: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i, call):
        with service.client() as c:
            start.wait()
            out[i] = call(c)

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return out


def test_two_clients_promoting_at_once_one_wins_the_other_is_told_who(service, version_tar):
    domain = "race-promote"
    with service.client() as c:
        settled = [upload(c, service, domain, version_tar, activate=True)]
        for _ in range(3):
            a, b = upload(c, service, domain, version_tar), upload(c, service, domain, version_tar)
            active = c.get(f"/v1/domains/{domain}").json()["active"]

            def promote(version):
                return lambda cl: cl.post(f"/v1/domains/{domain}/promote", headers=service.admin,
                                          json={"version": version, "expected_active": active})

            ra, rb = at_once(service, promote(a), promote(b))
            assert sorted([ra.status_code, rb.status_code]) == [200, 409], (ra.text, rb.text)
            won, lost = (ra, rb) if ra.status_code == 200 else (rb, ra)
            winner = won.json()["active"]
            assert f"{winner} is active" in lost.json()["error"]
            assert lost.json()["detail"][0]["field"] == "expected_active"
            info = c.get(f"/v1/domains/{domain}").json()
            assert info["active"] == winner
            loser = ({a, b} - {winner}).pop()
            assert {v["version"]: v["status"] for v in info["versions"]}[loser] == "candidate"
            settled.append(winner)
        # history = the versions that were the settled active one: rollback walks exactly those back
        for previous in reversed(settled[:-1]):
            r = c.post(f"/v1/domains/{domain}/rollback", headers=service.admin)
            assert r.status_code == 200 and r.json()["active"] == previous, r.text
        assert c.post(f"/v1/domains/{domain}/rollback", headers=service.admin).status_code == 409


def test_delete_racing_promote_never_brings_a_version_back(service, version_tar):
    domain = "race-delete"
    rnd = random.Random(7)
    outcomes = []
    with service.client() as c:
        upload(c, service, domain, version_tar, activate=True)
        for _ in range(5):
            v = upload(c, service, domain, version_tar)
            delay = rnd.uniform(0.05, 0.5)
            promoted, deleted = at_once(
                service,
                lambda cl: cl.post(f"/v1/domains/{domain}/promote", headers=service.admin, json={"version": v}),
                lambda cl: (time.sleep(delay), cl.delete(f"/v1/domains/{domain}/versions/{v}",
                                                         headers=service.admin))[1])
            info = c.get(f"/v1/domains/{domain}").json()
            listed = {x["version"]: x for x in info["versions"]}
            if deleted.status_code == 200:
                assert promoted.status_code == 404, promoted.text
                assert v not in listed and info["active"] != v
            else:
                assert deleted.status_code == 409 and promoted.status_code == 200, (deleted.text, promoted.text)
                assert info["active"] == v
            assert all(x["status"] != "failed" and x["manifest"] for x in listed.values()), listed
            outcomes.append(deleted.status_code)
    assert 200 in outcomes  # the delete won at least once: the race was run
