"""`reranker ab D`: the A/B report of a domain, read straight from the event store; `reranker challenger`,
`decide` and `decisions`: the champion/challenger test of a domain (state/challenge.py)."""
from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("ab")
    def ab(domain: str = typer.Argument(..., help="Domain id, e.g. legal."),
           as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
           db_url: str = typer.Option(None, "--db-url", help="Store URL (default: RERANKER_DB_URL or "
                                                             "the SQLite file in RERANKER_HOME)."),
           since: float = typer.Option(None, "--since", help="Only impressions at/after this unix time.")):
        """Per-arm impressions, clicks, CTR, MRR, latency; CTR difference, CI, p-value, verdict."""
        from state.ab_report import ab_report, format_report
        from state.ids import InvalidId, validate_domain
        from state.settings import Settings
        from state.store import Store
        try:
            validate_domain(domain)
        except InvalidId as e:
            raise typer.BadParameter(str(e), param_hint="DOMAIN")
        settings = Settings()
        store = Store(db_url or settings.database_url)
        try:
            report = ab_report(store, domain, since=since, spill_path=settings.spill_path)
        finally:
            store.close()
        typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))


def _referee():
    from state.challenge import Referee
    from state.registry import Registry
    from state.sequential import DecisionRule
    from state.settings import Settings
    from state.store import Store

    settings = Settings()
    return settings, Referee(Registry(settings.registry_root), Store(settings.database_url),
                             DecisionRule.from_settings(settings))


def _domain(domain: str) -> str:
    from state.ids import InvalidId, validate_domain
    try:
        return validate_domain(domain)
    except InvalidId as e:
        raise typer.BadParameter(str(e), param_hint="DOMAIN")


def format_status(s: dict) -> str:
    """A running test, or one decision, in a few lines."""
    arms = s["stats"].get("arms", {})
    lines = [f"{s['challenger']} vs {s['champion']}: {s['outcome']}"]
    for name, a in arms.items():
        f = (lambda v, spec=".3f": "-" if v is None else format(v, spec))
        lines.append(f"  {name:10} impr {a['impressions']:>7}  CTR {f(a['ctr'])}  MRR {f(a['mrr'])}  "
                     f"p95 {f(a['latency_ms_p95'], '.1f')} ms  errors {a['errors']}")
    for metric, m in s["stats"].get("metrics", {}).items():
        if m["cs"]:
            lines.append(f"  {metric.upper()} diff {m['diff']:+.4f}  always-valid interval [{m['cs'][0]:+.4f}, "
                         f"{m['cs'][1]:+.4f}]  p = {m['p_value']:.3g}")
    lines += [f"  - {r}" for r in s["reasons"]]
    return "\n".join(lines)


def register_challenger(app: typer.Typer) -> None:
    @app.command("decisions")
    def decisions(domain: str = typer.Argument(..., help="Domain id."),
                  as_json: bool = typer.Option(False, "--json", help="Print them as JSON.")):
        """The running champion/challenger test (what the rule says now) and the stored decisions."""
        from state.challenge import NoTest
        _, referee = _referee()
        try:
            current = referee.current(_domain(domain))
        except NoTest:
            current = None
        stored = referee.log.decisions(domain)
        if as_json:
            typer.echo(json.dumps({"domain": domain, "current": current, "decisions": stored}, indent=2))
            return
        typer.echo("running test:\n" + (format_status(current) if current else "  none"))
        typer.echo(f"decisions ({len(stored)}):")
        for d in stored:
            typer.echo(f"[{d['actor']} at {d['ts']:.0f}] " + format_status(d))

    @app.command("decide")
    def decide(domain: str = typer.Argument(..., help="Domain id."),
               by: str = typer.Option("cli", "--by", help="Who decides (the timeline says).")):
        """Evaluate the domain's test now and apply an outcome (promote, reject, inconclusive)."""
        from state.autopilot import spill_backlog
        from state.registry import RegistryError
        settings, referee = _referee()
        if spill_backlog(settings):
            typer.secho("error: impressions are spilling: replay them first (reranker events replay)", err=True)
            raise typer.Exit(2)
        try:
            out = referee.evaluate(_domain(domain), by)
        except RegistryError as e:
            typer.secho(f"error: {e}", err=True)
            raise typer.Exit(2)
        typer.echo(format_status(out) + ("\n(stored)" if out["decision"] else ""))

    @app.command("challenger")
    def challenger(domain: str = typer.Argument(..., help="Domain id."),
                   version: str = typer.Argument(None, help="The version to test (N or vN)."),
                   end: bool = typer.Option(False, "--end", help="Withdraw the running challenger instead."),
                   by: str = typer.Option("cli", "--by", help="Who acts (the timeline says).")):
        """Put a published version under test against the active one, or end the test (--end)."""
        from state.ids import model_id
        from cli.models import _load_check, _warm
        from state.ids import InvalidId, parse_version, version_name
        from state.registry import RegistryError
        settings, referee = _referee()
        reg, domain = referee.registry, _domain(domain)
        try:
            if end:
                version = reg.config(domain)["challenger"]
                if not version:
                    raise RegistryError(f"{domain} has no challenger under test")
                reg.end_challenge(domain, version)
                referee.log.add_event(domain, "withdrawn", by, model_id(domain, version), {"summary": "ended by hand"})
            elif version:
                version = version_name(parse_version(version))
                reg.manifest(domain, version)  # an unknown version is an error before anything loads
                _warm(settings, reg, domain, version)  # its latency is compared with the champion's: warm
                try:  # loaded before it takes traffic, as over HTTP: a version that does not load is never tested
                    reg.verify(domain, version)
                    _load_check(settings)(reg.version_dir(domain, version))
                except Exception as e:  # noqa: BLE001 - whatever broke, it must not serve
                    reg.mark_failed(domain, version, f"load failed: {e}")
                    raise RegistryError(f"cannot test {model_id(domain, version)}: it does not load: {e}") from e
                version = reg.set_challenger(domain, version)
                referee.log.add_event(domain, "challenged", by, model_id(domain, version),
                                      {"summary": f"{model_id(domain, version)} challenges the active version"})
            else:
                raise typer.BadParameter("give a VERSION, or --end", param_hint="VERSION")
        except (RegistryError, InvalidId) as e:
            typer.secho(f"error: {e}", err=True)
            raise typer.Exit(2)
        typer.echo(f"{model_id(domain, version)}: {'withdrawn' if end else 'challenger'}")
