"""Champion vs challenger and the autopilot over HTTP. Thin: the referee (state/challenge.py) and the
autopilot (serving/autopilot.py) do the work; every change needs the admin token, reads are open.

POST/DELETE /v1/domains/{d}/challenger   put a version under test / withdraw it
GET /v1/domains/{d}/decisions            the running test's statistics and the stored decisions
POST /v1/domains/{d}/decide              evaluate the test now (and apply an outcome)
GET /v1/domains/{d}/timeline             trained, gated, challenged, decided: by whom
GET/PUT /v1/domains/{d}/autopilot        a domain's autopilot switch and triggers
GET /v1/autopilot, PUT /v1/autopilot/kill, POST /v1/autopilot/run   the whole autopilot
"""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from serving import passages
from serving.auth import require_admin
from serving.autopilot import Autopilot
from serving.protocol import (Actor, AutopilotDomain, AutopilotRound, AutopilotStatus, AutopilotUpdate,
                              ChallengeStatus, ChallengerSet, DecisionList, DomainInfo, DomainPath, DomainTimeline,
                              KillSwitch, errors)
from state.autopilot import spill_backlog
from state.challenge import NoTest
from state.decisions import timeline
from state.ids import model_id, parse_version, version_name
from state.jobs import JobStore
from state.registry import RegistryError

router = APIRouter(tags=["challenger"])
ADMIN = [Depends(require_admin)]


def _pilot(request: Request) -> Autopilot:
    return request.app.state.autopilot


def _changed(request: Request, domain: str | None = None) -> None:
    request.app.state.service.invalidate(domain)


@router.post("/v1/domains/{domain}/challenger", response_model=DomainInfo, dependencies=ADMIN,
             responses=errors(401, 403, 404, 409, 422))
async def set_challenger(domain: DomainPath, body: ChallengerSet, request: Request) -> DomainInfo:
    """Test a published version against the active one on live traffic (409 while another test runs).
    It is loaded in the pool first: a version that does not load never takes traffic."""
    reg = _pilot(request).registry
    name = version_name(parse_version(body.version))
    reg.manifest(domain, name)  # 404 for an unknown version
    try:
        await request.app.state.service.scorer.warm(model_id(domain, name))
    except Exception as e:  # noqa: BLE001 - the pool marked it failed; nothing changes
        raise RegistryError(f"cannot test {model_id(domain, name)}: it does not load: {e}") from e
    # its p95 latency is a guardrail against the champion's, whose passages are stored: embed them first
    warm = await passages.warm_version(request.app.state, domain, name, "challenger")
    await asyncio.to_thread(reg.set_challenger, domain, name)
    await asyncio.to_thread(_pilot(request).log.add_event, domain, "challenged", body.by, model_id(domain, name),
                            {"summary": f"{model_id(domain, name)} challenges the active version"
                                        + (f"; {warm['embedded']} of {warm['passages']} passages embedded ahead"
                                           if warm else ""), "warm": warm})
    _changed(request, domain)
    return DomainInfo(**reg.describe(domain))


@router.delete("/v1/domains/{domain}/challenger", response_model=DomainInfo, dependencies=ADMIN,
               responses=errors(401, 403, 404, 409, 422))
async def withdraw_challenger(domain: DomainPath, request: Request,
                              by: str = Query("admin", min_length=1, max_length=100, pattern=r"\S",
                                              description="who acts (the timeline says)")) -> DomainInfo:
    """End the test without a decision: the challenger is retired, the active version keeps serving."""
    reg = _pilot(request).registry
    current = reg.config(domain)["challenger"]
    if not current:
        raise NoTest(f"{domain} has no challenger under test")
    await asyncio.to_thread(reg.end_challenge, domain, current)
    await asyncio.to_thread(_pilot(request).log.add_event, domain, "withdrawn", by, model_id(domain, current),
                            {"summary": "test ended without a decision"})
    _changed(request, domain)
    return DomainInfo(**reg.describe(domain))


@router.get("/v1/domains/{domain}/decisions", response_model=DecisionList, responses=errors(404, 422))
async def decisions(domain: DomainPath, request: Request) -> DecisionList:
    pilot = _pilot(request)
    pilot.registry.config(domain)  # 404 for an unknown domain
    try:
        current = await asyncio.to_thread(pilot.referee.current, domain)
    except NoTest:
        current = None
    return DecisionList(domain=domain, current=current, decisions=await asyncio.to_thread(pilot.log.decisions, domain))


@router.post("/v1/domains/{domain}/decide", response_model=ChallengeStatus, dependencies=ADMIN,
             responses=errors(401, 403, 404, 409, 422))
async def decide(domain: DomainPath, body: Actor, request: Request) -> ChallengeStatus:
    """Evaluate the running test now; an outcome (promote, reject, inconclusive) is applied and stored.
    409 without a test, or while impressions are spilling (the data would be incomplete)."""
    pilot = _pilot(request)
    if spill_backlog(pilot.settings):
        raise HTTPException(409, "impressions are spilling: decide once they are replayed")
    out = await asyncio.to_thread(pilot.referee.evaluate, domain, body.by)
    _changed(request, domain)
    return ChallengeStatus(**out)


@router.get("/v1/domains/{domain}/timeline", response_model=DomainTimeline, responses=errors(422))
async def domain_timeline(domain: DomainPath, request: Request) -> DomainTimeline:
    pilot = _pilot(request)
    jobs = JobStore(pilot.settings.home).list(domain)
    return DomainTimeline(domain=domain, events=await asyncio.to_thread(timeline, domain, jobs, pilot.log))


@router.get("/v1/domains/{domain}/autopilot", response_model=AutopilotDomain, responses=errors(422))
async def get_domain_autopilot(domain: DomainPath, request: Request) -> AutopilotDomain:
    return AutopilotDomain(**_pilot(request).config.domain(domain))


@router.put("/v1/domains/{domain}/autopilot", response_model=AutopilotDomain, dependencies=ADMIN,
            responses=errors(401, 403, 422))
async def put_domain_autopilot(domain: DomainPath, body: AutopilotUpdate, request: Request) -> AutopilotDomain:
    """Switch a domain's autopilot and tune its triggers: only the keys sent change."""
    return AutopilotDomain(**_pilot(request).config.update(domain, **body.model_dump(exclude_unset=True)))


def _status(pilot: Autopilot) -> AutopilotStatus:
    return AutopilotStatus(killed=pilot.config.killed(), spill_backlog=spill_backlog(pilot.settings),
                           interval_s=pilot.settings.autopilot_interval_s, max_jobs=pilot.settings.autopilot_max_jobs,
                           domains={d: pilot.config.domain(d) for d in pilot.config.enabled_domains()})


@router.get("/v1/autopilot", response_model=AutopilotStatus)
async def autopilot_status(request: Request) -> AutopilotStatus:
    """The kill switch, the spill state and the domains whose autopilot is on."""
    return _status(_pilot(request))


@router.put("/v1/autopilot/kill", response_model=AutopilotStatus, dependencies=ADMIN, responses=errors(401, 403, 422))
async def kill_switch(body: KillSwitch, request: Request) -> AutopilotStatus:
    """killed: true stops every automatic action (decisions on the timer, trainings, challengers) at once."""
    _pilot(request).config.set_killed(body.killed)
    return _status(_pilot(request))


@router.post("/v1/autopilot/run", response_model=AutopilotRound, dependencies=ADMIN, responses=errors(401, 403))
async def run_round(request: Request) -> AutopilotRound:
    """One round now (what the timer does every RERANKER_AUTOPILOT_INTERVAL_S)."""
    actions = await asyncio.to_thread(_pilot(request).round)
    _changed(request)
    return AutopilotRound(actions=actions)
