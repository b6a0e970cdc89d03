"""`reranker push/promote/rollback/domains/show/build-base`: the model registry from the shell."""
from __future__ import annotations

import json
from pathlib import Path

import typer


def _registry():
    from state.registry import Registry
    from state.settings import get_settings

    return Registry(get_settings().registry_root)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    @app.command()
    def push(model_dir: Path = typer.Argument(..., exists=True, file_okay=False,
                                              help="A sentence-transformers model dir, or an exported version dir."),
             domain: str = typer.Option(..., "--domain", "-d"),
             activate: bool = typer.Option(False, "--activate", help="Also make it the active version."),
             as_json: bool = typer.Option(False, "--json")) -> None:
        """Export (ONNX int8 + parity checks) and publish MODEL_DIR as the domain's next version."""
        from state.ids import InvalidId, validate_domain
        from state.registry import RegistryError

        try:
            validate_domain(domain)
        except InvalidId as e:
            _fail(str(e))
        reg = _registry()
        try:
            if (model_dir / "model.onnx").is_file() and (model_dir / "manifest.json").is_file():
                from serving.routes.models import load_check

                version = reg.publish_dir(domain, model_dir, activate=activate, check=load_check)
            else:
                from exporters.build import ExportError
                from exporters.publish import export_and_publish
                from state.settings import get_settings
                from tqdm import tqdm

                s = get_settings()
                with tqdm(total=6, desc="export", unit="stage") as bar:
                    def progress(stage: str, done: int, total: int) -> None:
                        bar.set_description(stage)
                        bar.update(done - bar.n)

                    try:
                        version, _ = export_and_publish(reg, domain, str(model_dir), activate=activate,
                                                        max_length=s.max_length, threads=s.intra_op_threads,
                                                        openvino=s.builds_openvino, progress=progress)
                    except ExportError as e:
                        _fail(f"not published: {e}")
        except RegistryError as e:
            _fail(str(e))
        man = reg.manifest(domain, version)
        if as_json:
            typer.echo(json.dumps(man, indent=2))
        else:
            typer.echo(f"published {man['model_id']}" + (" (active)" if activate else " (candidate)")
                       + f"  parity spearman={man.get('parity', {}).get('spearman', float('nan')):.4f}"
                       + f"  ms/pair@256={man.get('ms_per_pair_256', float('nan')):.1f}")

    @app.command()
    def promote(domain: str, version: str) -> None:
        """Make VERSION (2 or v2) the domain's active model; refused if it does not verify and load."""
        from serving.routes.models import load_check
        from state.registry import RegistryError
        from state.ids import InvalidId

        try:
            name = _registry().promote(domain, version, check=load_check)
        except (RegistryError, InvalidId) as e:
            _fail(str(e))
        typer.echo(f"{domain}@{name} is active")

    @app.command()
    def rollback(domain: str) -> None:
        """Re-activate the version that was active before the current one."""
        from state.registry import RegistryError
        from state.ids import InvalidId

        try:
            name = _registry().rollback(domain)
        except (RegistryError, InvalidId) as e:
            _fail(str(e))
        typer.echo(f"{domain}@{name} is active")

    @app.command()
    def domains(as_json: bool = typer.Option(False, "--json")) -> None:
        """List domains with their active version and versions."""
        reg = _registry()
        info = [reg.describe(d) for d in reg.domains()]
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        for d in info:
            versions = ", ".join(f"{v['version']}:{v['status']}" for v in d["versions"])
            typer.echo(f"{d['domain']:<24} active={d['active'] or '-':<6} ab_split={d['ab_split']}  [{versions}]")

    @app.command("build-base")
    def build_base() -> None:
        """Export the base model to ONNX int8 (done automatically on first `make serve`)."""
        from exporters.base_model import ensure_base
        from state.settings import get_settings

        s = get_settings()
        typer.echo(ensure_base(_registry(), s.base_model, s.max_length, s.intra_op_threads,
                               openvino=s.builds_openvino))
