"""`reranker train` and `reranker evaluate`: fine-tune a domain model, compare it with bm25 and the base."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

DEFAULT_K = 100


class _Bars:
    """tqdm bars, one per stage, written to stderr so --json stdout stays clean."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bar, self.name = enabled, None, None

    def stage(self, name: str) -> None:
        self.close()
        self.name = name
        typer.echo(f"[{name}]", err=True)

    def progress(self, done: int, total: int) -> None:
        if not self.enabled or not total:
            return
        from tqdm import tqdm

        if self.bar is None or self.bar.total != total:
            self.close()
            self.bar = tqdm(total=total, desc=self.name, leave=False)
        self.bar.update(done - self.bar.n)

    def update(self, **fields: Any) -> None:
        pass

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _print_table(systems: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    names = [m for m in next(iter(systems.values())) if m != "model"]
    table = Table()
    table.add_column("system")
    for m in names:
        table.add_column(m, justify="right")
    for sys_name, res in systems.items():
        label = f"{sys_name} ({res['model']})" if "model" in res else sys_name
        table.add_row(label, *[f"{res[m]:.4f}" for m in names])
    Console(stderr=False).print(table)


def _describe_export(export: dict[str, Any]) -> str:
    """Which rung of the export ladder won, what it costs, and why the rungs before it did not."""
    served = f"; OpenVINO: {export['openvino']}" if export.get("openvino") else ""
    lines = [f"model format: {export['precision']} ({export['quantization']}{served}), "
             f"{export['ms_per_pair_256']:.1f} ms/pair at 256 tokens, {export['size_bytes'] / 1e6:.1f} MB"]
    lines += [f"  rung {e['rung']}: {e['ms_per_pair_256']} ms/pair ({e['serves']}), {e['size_bytes'] / 1e6:.1f} MB, "
              + ("kept" if e["passed"] else e["failure"]) for e in export["ladder"]]
    return "\n".join(lines)


def _json_stdout(as_json: bool) -> contextlib.AbstractContextManager:
    """--json promises one JSON object on stdout, but libraries print there: the HF trainer its loss
    logs (tqdm.write), NNCF its progress bars (exporting the OpenVINO model). Send them to stderr."""
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def train(domain: str = typer.Option(..., help="domain id"),
          beir: Path = typer.Option(..., exists=True, file_okay=False, help="BEIR directory"),
          split: str = typer.Option("train", help="qrels split to train on"),
          max_queries: Optional[int] = typer.Option(None, help="seeded subset of training queries"),
          activate: bool = typer.Option(False, help="make the new version the domain's active model"),
          as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
          config: Optional[str] = typer.Option(None, help="training options as JSON (training.config)")) -> None:
    """Fine-tune on a BEIR split (held-out dev queries carved from it), gate, export, publish."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from state.ids import validate_domain
    from state.settings import Settings
    from training.config import TrainConfig
    from training.pipeline import DataSpec, GateFailed, run

    validate_domain(domain)
    settings = Settings()
    cfg = TrainConfig.from_dict({**json.loads(config or "{}"),
                                 **({"max_queries": max_queries} if max_queries else {})})
    bars = _Bars(not as_json)
    try:
        with _json_stdout(as_json):
            out = run(domain, DataSpec(beir=str(beir), beir_split=split), cfg, settings, activate=activate,
                      reporter=bars)
    except GateFailed as e:
        bars.close()
        if as_json:
            typer.echo(json.dumps({"published": False, "error": str(e), "gates": e.gates}))
        else:
            typer.echo(f"not published: {e}", err=True)
        raise typer.Exit(2)
    bars.close()
    if as_json:
        typer.echo(json.dumps({"published": True, **out}))
        return
    typer.echo(f"published {out['model_id']}{' (active)' if activate else ''} in {out['seconds']} s")
    typer.echo(_describe_export(out["export"]))
    _print_table({k: v for k, v in out["metrics"].items() if k in ("bm25", "base", "candidate")})


def evaluate(domain: Optional[str] = typer.Option(None, help="domain id: its active model is evaluated too "
                                                            "(without one: BM25 and the base)"),
             beir: Path = typer.Option(..., exists=True, file_okay=False, help="BEIR directory"),
             split: str = typer.Option("test", help="qrels split to evaluate on"),
             k: int = typer.Option(DEFAULT_K, help="rerank the first stage's top k"),
             max_queries: Optional[int] = typer.Option(None, help="seeded subset of queries"),
             as_json: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Rerank the language-aware BM25 top-k with the base (and the multilingual base, when one is
    configured) and, when the domain has an active model, that model, scored as served, and each of their
    parts alone; print NDCG/MRR/MAP/Recall/context precision.
    Before training, this says how good the base is on the domain's data."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from scoring.lexical import Analyzer
    from state.ids import model_id, validate_domain
    from state.registry import Registry
    from state.settings import Settings
    from training.bm25 import BM25Index, domain_language
    from training.evaluate import evaluate_systems, served_base, served_options, version_scorer
    from training.sources.beir import load_beir
    from training.splits import subset

    settings = Settings()
    registry = Registry(settings.registry_root)
    active = registry.active_version(validate_domain(domain)) if domain else None  # None: no domain model
    if domain and not active:
        typer.echo(f"domain {domain!r} has no active model: evaluating BM25 and the base", err=True)
    data = load_beir(beir, split)
    qids = subset(sorted(data.queries), max_queries)
    queries = {q: data.queries[q] for q in qids}
    qrels = {q: data.qrels[q] for q in qids}
    bars = _Bars(not as_json)
    manifest = registry.manifest(domain, active) if active else {}
    language = (manifest.get("lexical") or {}).get("language") or domain_language(data.corpus, list(queries.values()))

    def progress(name: str, done: int, total: int) -> None:
        if bars.name != name:
            bars.stage(name)
        bars.progress(done, total)

    with _json_stdout(as_json):
        bars.stage("bm25")
        cands = BM25Index(data.corpus, Analyzer(language)).search(queries, k)
        bars.stage("base model")  # built into the home on first use
        served = served_options(settings, threads=max(1, min(2, os.cpu_count() or 1)))  # scored as the pool scores
        systems = {"bm25": None, **served_base(settings, served, settings.multilingual_base or None)}
        if active:
            version_dir = str(registry.version_dir(domain, active))
            systems |= {"domain_neural": version_scorer(version_dir, **served, hybrid=False),
                        "domain": version_scorer(version_dir, **served)}
            if manifest.get("lexical"):
                systems["lexical"] = version_scorer(version_dir, **served, lexical_only=True)
        res = evaluate_systems(systems, queries, qrels, cands, data.corpus, k, progress=progress)
    bars.close()
    if active:
        res["domain"] = {"model": model_id(domain, active), **res["domain"]}
    res["base"] = {"model": settings.base_model, **res["base"]}
    if "multilingual_base" in res:
        res["multilingual_base"] = {"model": settings.multilingual_base, **res["multilingual_base"]}
    out = {"dataset": data.name, "split": split, "queries": len(queries), "k": k, "engine": settings.engine,
           "language": language, "domain_model": model_id(domain, active) if active else None,
           "fusion": manifest.get("fusion"),
           "base_lexical": {**settings.base_lexical(), "languages": settings.base_languages}, "systems": res}
    if as_json:
        typer.echo(json.dumps(out))
    else:
        typer.echo(f"{data.name} {split}: {len(queries)} queries, BM25 top-{k} reranked")
        _print_table(res)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
