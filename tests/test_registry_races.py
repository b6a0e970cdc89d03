"""Promote is conditional and a deleted version stays deleted: races on the registry itself, from threads
whose loads overlap (the load check sleeps, as a real load takes time), repeated over many rounds."""
from __future__ import annotations

import random
import threading
import time

import pytest

from state.registry import Conflict, NotFound, Registry, RegistryError
from tests.test_registry import publish


def slow_check(seconds: float):
    """A load check that takes time and then reads the model, as a real load does."""
    return lambda version_dir: (time.sleep(seconds), (version_dir / "model.onnx").read_bytes())


def race(*calls):
    """Run the calls at the same moment; each one's result or the exception it raised."""
    out: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i, fn):
        start.wait()
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001 - the test looks at it
            out[i] = e

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_promotes_one_wins_the_other_is_told_who(tmp_path):
    reg = Registry(tmp_path)
    assert publish(reg, "race", activate=True) == "v1"
    winners = []
    for _ in range(8):
        a, b = publish(reg, "race"), publish(reg, "race")
        results = race(lambda: reg.promote("race", a, check=slow_check(0.1)),
                       lambda: reg.promote("race", b, check=slow_check(0.1)))
        won = [r for r in results if isinstance(r, str)]
        lost = [r for r in results if isinstance(r, Conflict)]
        assert len(won) == 1 and len(lost) == 1, results
        assert lost[0].active == won[0] and f"{won[0]} is active" in str(lost[0])
        winners.append(won[0])
        cfg = reg.config("race")
        assert cfg["active"] == won[0]
        loser = ({a, b} - {won[0]}).pop()
        assert cfg["versions"][loser]["status"] == "candidate"  # untouched: it never became active
    # the history holds exactly the versions that were the settled active one, in order
    assert reg.config("race")["history"] == ["v1"] + winners[:-1]


def test_expected_active_is_checked_and_promoting_the_active_one_is_a_no_op(tmp_path):
    reg = Registry(tmp_path)
    publish(reg, "d")
    publish(reg, "d")
    with pytest.raises(Conflict) as err:
        reg.promote("d", "v1", expected_active="v2")
    assert err.value.active is None and "no version is active" in str(err.value)
    assert reg.promote("d", "v1", expected_active=None) == "v1"
    assert reg.promote("d", "v1", expected_active="v2") == "v1"  # already active: nothing to change
    with pytest.raises(Conflict):
        reg.promote("d", "v2", expected_active=None)
    assert reg.promote("d", "2", expected_active="1") == "v2"
    assert reg.config("d")["history"] == ["v1"]


@pytest.mark.parametrize("seed", range(3))
def test_a_deleted_version_stays_deleted_when_delete_races_promote(tmp_path, seed):
    rnd = random.Random(seed)
    reg = Registry(tmp_path)
    publish(reg, "dr", activate=True)
    outcomes = set()
    for _ in range(8):
        # a big model file: the promote's sha256 check reads it while the delete removes it
        v = publish(reg, "dr", payload=rnd.randbytes(4 << 20))
        delay = rnd.uniform(0.0, 0.15)
        promoted, deleted = race(lambda: reg.promote("dr", v, check=slow_check(0.05)),
                                 lambda: (time.sleep(delay), reg.delete_version("dr", v)))
        cfg = reg.config("dr")
        if isinstance(deleted, tuple):  # the delete answered "done": the promote must have failed
            assert isinstance(promoted, NotFound), promoted
            assert v not in cfg["versions"] and not reg.version_dir("dr", v).exists()
            outcomes.add("deleted")
        else:  # the promote won: the delete was refused (the version is active)
            assert promoted == v and isinstance(deleted, RegistryError), (promoted, deleted)
            assert cfg["active"] == v
            outcomes.add("promoted")
        statuses = {name: info["status"] for name, info in cfg["versions"].items()}
        assert "failed" not in statuses.values(), statuses
        assert all(reg.version_dir("dr", name).is_dir() for name in cfg["versions"])
        described = {x["version"] for x in reg.describe("dr")["versions"]}
        assert described == set(cfg["versions"]) and all(x["manifest"] for x in reg.describe("dr")["versions"])
    assert "deleted" in outcomes  # the race was run, not only the easy order


def test_a_load_failing_on_a_deleted_version_does_not_bring_it_back(tmp_path):
    reg = Registry(tmp_path)
    v = publish(reg, "gone")
    reg.delete_version("gone", v)
    assert reg.mark_failed("gone", v, "load failed: model.onnx is missing") is False
    assert reg.describe("gone")["versions"] == []
    v2 = publish(reg, "gone")
    assert reg.mark_failed("gone", v2, "load failed: boom") is True
    assert reg.config("gone")["versions"][v2]["status"] == "failed"
