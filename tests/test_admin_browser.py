"""The admin page in a real browser (Debian's chromium driven by Playwright) against the session's real
service: login, the domains list, promote/rollback, grading with the keyboard, a training job started
from the form. Screenshots of every page go to test-output/admin-ui/ (look at them)."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import SCIFACT, make_tarball
from tests.test_search_log_training import scifact_slice
from tests.test_training_http import TINY

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[1] / "test-output" / "admin-ui"
NAME = "Tess Tester"

pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)"),
              pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    SHOTS.mkdir(parents=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, service):
    """A fresh tab (own sessionStorage); any script error or CSP violation fails the test."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=service.url)
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    assert not problems, problems


def shot(pg, name: str) -> None:
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def login(pg, service, name: str = NAME) -> None:
    from playwright.sync_api import expect

    pg.goto("/admin#/login")
    pg.fill("#login-token", service.admin_token)
    pg.fill("#login-name", name)
    pg.click("#login-form button[type=submit]")
    expect(pg.locator("#who")).to_have_text(f"admin: {name}")


def confirm(pg) -> None:
    pg.locator("dialog#confirm .confirm-ok").click()


def test_wrong_token_shows_an_error_and_logout_forgets_the_token(page, service):
    from playwright.sync_api import expect

    page.goto("/admin#/login")
    page.fill("#login-token", "not-the-token")
    page.fill("#login-name", NAME)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-form .error")).to_have_text("Wrong admin token: the service refused it.")
    shot(page, "login-wrong-token")
    assert page.evaluate("sessionStorage.length") == 0
    login(page, service)
    assert page.evaluate("sessionStorage.getItem('reranker.admin.token')") == service.admin_token
    assert service.admin_token not in page.url
    page.click("#logout")
    expect(page.locator("#who")).to_have_text("read-only (not logged in)")
    assert page.evaluate("sessionStorage.length + localStorage.length") == 0
    expect(page.locator("#domains")).to_be_visible()  # read-only views stay usable


def test_domains_list_promote_rollback_and_split(page, service, base_version, tmp_path):
    from playwright.sync_api import expect

    tar = make_tarball(base_version, tmp_path / "version.tar.gz").read_bytes()
    with service.client() as c:
        for _ in range(2):
            r = c.post("/v1/domains/ui-swap/versions", content=tar,
                       headers={**service.admin, "content-type": "application/gzip"})
            assert r.status_code == 201, r.text
        assert c.post("/rerank?domain=ui-swap", json={"query": "q", "documents": ["a", "b"]}).status_code == 200
    login(page, service)
    row = page.locator("#domains-body tr[data-domain=ui-swap]")
    expect(row).to_contain_text("base only")
    shot(page, "overview")
    row.get_by_role("link", name="ui-swap").click()
    expect(page.locator("#versions tr[data-version=v2]")).to_contain_text("candidate")

    for version in ("v1", "v2"):
        page.click(f"#versions button[data-action=promote][data-version={version}]")
        confirm(page)
        expect(page.locator("#domain-status")).to_have_text(f"ui-swap@{version} is active")
        assert service.registry.active_version("ui-swap") == version
    expect(page.locator("#versions tr[data-version=v1]")).to_contain_text("retired")
    page.click("#rollback")
    expect(page.locator("dialog#confirm")).to_contain_text("from v2")
    confirm(page)
    expect(page.locator("#domain-status")).to_have_text("rolled back: ui-swap@v1 is active")
    assert service.registry.active_version("ui-swap") == "v1"
    page.fill("#ab-split", "30")
    page.click("#ab-split-form button[type=submit]")
    expect(page.locator("#domain-status")).to_contain_text("30% of traffic to the domain model")
    assert service.registry.config("ui-swap")["ab_split"] == pytest.approx(0.3)
    page.click("#versions button[data-action=delete][data-version=v2]")
    page.locator("dialog#confirm button[value=cancel]").click()  # cancelled: nothing happens
    assert "v2" in service.registry.config("ui-swap")["versions"]
    expect(page.locator("#ab-verdict")).to_contain_text("Not enough data")
    shot(page, "domain")


@pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/data/scifact")
def test_grade_with_the_keyboard_then_train_on_the_labels(page, service, settings):
    from playwright.sync_api import expect

    from state.labels import LabelStore
    from state.store import Store

    domain = "ui-label"
    traffic = scifact_slice(3, 6, seed=11)
    with service.client() as c:
        for query, docs, _ in [traffic[0]] * 3 + traffic[1:]:  # the first query is the most frequent
            r = c.post(f"/rerank?domain={domain}", json={"query": query, "documents": docs})
            assert r.status_code == 200, r.text
    login(page, service)
    page.goto(f"/admin#/d/{domain}/label")
    expect(page.locator("#label-query")).to_have_text(traffic[0][0])
    passages = page.locator("#passages li.passage")
    expect(passages).to_have_count(6)
    shown = [passages.nth(i).locator(".passage-text").inner_text() for i in range(6)]
    for key in ("ArrowDown", "ArrowDown", "ArrowUp", "ArrowUp"):  # back on the first passage
        page.keyboard.press(key)
    expect(passages.nth(0)).to_have_class("passage focused")
    for key in "54321":  # each grade moves the focus to the next passage
        page.keyboard.press(key)
    expect(passages.nth(4)).to_have_attribute("data-grade", "1")
    shot(page, "label")
    page.keyboard.press("Enter")
    expect(page.locator("#label-status")).to_contain_text("Saved 5 grades")
    expect(page.locator("#label-query")).not_to_have_text(traffic[0][0])  # the next query is on screen

    store = Store(settings.database_url)
    try:
        item = next(i for i in LabelStore(store).queue(domain, pending_only=False) if i["query"] == traffic[0][0])
        summary = LabelStore(store).summary(domain)
    finally:
        store.close()
    assert [t.strip() for t in shown] == [p["text"].strip() for p in item["passages"]]  # what the page showed
    assert [p["labels"].get(NAME) for p in item["passages"]] == [5, 4, 3, 2, 1, None]
    assert summary["labels"] == 5 and summary["labellers"] == {NAME: 5}

    page.goto(f"/admin#/d/{domain}/train")
    expect(page.locator("#src-expert-labels")).to_be_checked()  # labels exist: used by default
    page.select_option("#upload-kind", "labels")
    page.set_input_files("#upload-file", files=[{"name": "bad-labels.csv", "mimeType": "text/csv",
                                                  "buffer": b"query,document,relevance\nq,a passage,4\nq,b,7\n"}])
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#upload-status .error")).to_contain_text("bad-labels.csv:3: relevance '7'")
    page.select_option("#upload-kind", "ragas")
    ragas = json.dumps({"question": traffic[1][0], "contexts": [d["text"] for d in traffic[1][1][:3]],
                        "reference_contexts": [traffic[1][1][0]["text"]]})
    page.set_input_files("#upload-file", files=[{"name": "eval.jsonl", "mimeType": "application/json",
                                                  "buffer": (ragas + "\n").encode()}])
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#upload-status")).to_contain_text("eval.jsonl accepted")
    expect(page.locator("#uploads input[name=upload]")).to_be_checked()
    page.uncheck("#src-search-logs")
    page.click("#train-form details summary")
    page.fill("#src-beir", str(SCIFACT))
    for name, value in {**TINY, "max_queries": 16}.items():
        page.fill(f"#opt-{name}", str(value))
    page.check("#opt-activate")
    shot(page, "train")
    page.click("#start-training")
    expect(page).to_have_url(re.compile(r"/admin#/jobs/train-ui-label-"))
    job_id = page.url.rsplit("/", 1)[1]
    # the loss curve appears once the trainer logged a step, and stays
    expect(page.locator("#job figcaption")).to_contain_text("last loss", timeout=1_200_000)
    shot(page, "job-running")
    expect(page.locator("#job .badge")).to_have_text(re.compile("succeeded|failed|cancelled"), timeout=1_200_000)
    error = page.locator("#job-error")
    assert page.locator("#job .badge").inner_text() == "succeeded", error.inner_text() if error.count() else ""
    expect(page.locator("#job-result")).to_have_text(f"Published {domain}@v1.")
    expect(page.locator("#job-gates li.pass")).to_have_count(5)  # quality, parity, ms/pair, size, lexical overhead
    assert page.evaluate("Boolean(Chart.getChart(document.getElementById('loss-chart')))")
    shot(page, "job")
    with service.client() as c:
        rec = c.get(f"/v1/jobs/{job_id}").json()
    assert rec["sources"]["expert_labels"] == {"pairs": 5, "queries": 1,
                                               "relevance": {"1": 1, "2": 1, "3": 1, "4": 1, "5": 1}}
    assert rec["sources"]["ragas:eval.jsonl"]["pairs"] == 3
    assert rec["loss"] and all(p["loss"] > 0 for p in rec["loss"])
    assert service.registry.active_version(domain) == "v1"
    expect(page.locator("#job-sources tr[data-source=expert_labels]")).to_contain_text("pairs 5")

    with service.client() as c:  # A/B traffic on the new version: both arms, some clicks
        for i in range(40):
            query, docs, relevant = traffic[i % 3]
            r = c.post(f"/rerank?domain={domain}", json={"query": query, "documents": docs, "user_id": f"ab-{i}"})
            assert r.status_code == 200, r.text
            if i % 3 == 0:
                c.post("/v1/feedback", json={"request_id": r.json()["id"], "clicked": [r.json()["results"][1]["index"]]})
        for _ in range(50):  # impressions are stored in batches, a moment after the answer
            arms = c.get(f"/v1/domains/{domain}/ab").json()["arms"]
            if arms["base"]["impressions"] + arms["domain"]["impressions"] == 45:
                break
            time.sleep(0.2)
    page.click("#job-result a")
    expect(page.locator("#versions tr[data-version=v1]")).to_contain_text("active")
    arms = page.locator("#ab-arms tbody tr")
    expect(arms).to_have_count(2)
    shown_impressions = sum(int(arms.nth(i).locator("td").nth(1).inner_text()) for i in range(2))
    assert shown_impressions == 45  # the 5 before training and the 40 after
    expect(page.locator("#labels-summary")).to_contain_text(f"5 grades of 5 (query, passage) pairs over 1 queries by {NAME}")
    page.wait_for_timeout(500)  # the charts draw without animation, after the data arrived
    shot(page, "domain-trained")


def test_challenger_timeline_and_autopilot_switch(page, service, base_version, tmp_path):
    """Challenge a version from the versions table, read the running test, switch the autopilot on and
    the kill switch on and off, end the test: the timeline shows who did what."""
    from playwright.sync_api import expect

    tar = make_tarball(base_version, tmp_path / "version.tar.gz").read_bytes()
    with service.client() as c:
        for _ in range(2):
            assert c.post("/v1/domains/ui-champ/versions", content=tar,
                          headers={**service.admin, "content-type": "application/gzip"}).status_code == 201
        assert c.post("/v1/domains/ui-champ/promote", json={"version": "v1"}, headers=service.admin).status_code == 200
    login(page, service)
    page.goto("/admin#/d/ui-champ")
    expect(page.locator("#test-none")).to_be_visible()
    page.click("#versions button[data-action=challenge][data-version=v2]")
    expect(page.locator("#domain-status")).to_have_text("ui-champ@v2 is the challenger")
    assert service.registry.config("ui-champ")["challenger"] == "v2"
    expect(page.locator("#versions tr[data-version=v2]")).to_contain_text("challenger")
    expect(page.locator("#test-box .verdict")).to_contain_text("Rule says: continue")
    expect(page.locator("#test-arms tbody tr")).to_have_count(2)
    expect(page.locator("#timeline tr[data-kind=challenged]")).to_contain_text(NAME)

    page.check("#autopilot-enabled")
    page.fill("#autopilot-clicks", "25")
    page.click("#autopilot-form button[type=submit]")
    expect(page.locator("#domain-status")).to_have_text("autopilot on for ui-champ")
    with service.client() as c:
        pilot = c.get("/v1/domains/ui-champ/autopilot").json()
    assert (pilot["enabled"], pilot["min_clicked_queries"]) == (True, 25)
    page.click("#kill-switch")
    expect(page.locator("#autopilot-state")).to_contain_text("The kill switch is on")
    shot(page, "challenger")
    page.click("#kill-switch")
    expect(page.locator("#autopilot-state")).not_to_contain_text("kill switch")
    with service.client() as c:
        assert c.get("/v1/autopilot").json()["killed"] is False
    page.click("#end-test")
    expect(page.locator("#domain-status")).to_have_text("test ended")
    first = page.locator("#timeline tbody tr").first
    expect(first).to_have_attribute("data-kind", "withdrawn")
    expect(first).to_have_attribute("data-actor", NAME)
    page.uncheck("#autopilot-enabled")
    page.click("#autopilot-form button[type=submit]")
    expect(page.locator("#domain-status")).to_have_text("autopilot off for ui-champ")
    shot(page, "timeline")
