"""`reranker push/promote/rollback/domains/show/build-base`: the model registry from the shell."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from state.ids import model_id


def _settings():
    from state.settings import Settings

    return Settings()


def _registry(settings=None):
    from state.registry import Registry

    return Registry((settings or _settings()).registry_root)


def _load_check(settings):
    """The load check with the engine the service serves versions with."""
    from functools import partial

    from scoring.scorer import load_check

    return partial(load_check, engine=settings.engine)


def _warm(settings, reg, domain: str, version: str):
    """The version's passages into this node's store before it takes traffic (cli/warm.py), with a bar on
    stderr. Only a version that verifies is loaded here; the promote (or test) that follows says what is
    wrong with one that does not. A failure of the warm-up itself is a warning: requests compute what is
    not stored."""
    from tqdm import tqdm

    from cli.warm import warm_version
    from state.ids import version_name, parse_version
    from state.registry import RegistryError

    name = version_name(parse_version(version))
    try:
        reg.verify(domain, name)
    except RegistryError:
        return None
    try:
        with tqdm(desc="warm", unit="passage", disable=None) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            return warm_version(settings, domain, name, progress)
    except Exception as e:  # noqa: BLE001
        typer.secho(f"warning: {model_id(domain, name)}'s passages not embedded ahead: {e}", err=True)
        return None


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
        from scoring.files import MANIFEST, MODEL_ONNX

        settings = _settings()
        reg = _registry(settings)
        try:
            if (model_dir / MODEL_ONNX).is_file() and (model_dir / MANIFEST).is_file():
                version = reg.publish_dir(domain, model_dir, activate=activate, check=_load_check(settings))
            else:
                from exporters.build import STAGES, ExportError
                from exporters.publish import export_and_publish
                from tqdm import tqdm

                with tqdm(total=len(STAGES), desc="export", unit="stage") as bar:
                    def progress(stage: str, done: int, total: int) -> None:
                        bar.set_description(stage)
                        bar.update(done - bar.n)

                    try:
                        version, _ = export_and_publish(reg, domain, str(model_dir), settings, activate=activate,
                                                        progress=progress)
                    except ExportError as e:
                        _fail(f"not published: {e}")
        except RegistryError as e:
            _fail(str(e))
        man = reg.manifest(domain, version)
        if as_json:
            typer.echo(json.dumps(man, indent=2))
        else:
            typer.echo(f"published {man['model_id']}" + (" (active)" if activate else " (candidate)")
                       + f"  format={man.get('precision', 'int8')}  parity spearman={man.get('parity', {}).get('spearman', float('nan')):.4f}"
                       + f"  ms/pair@256={man.get('ms_per_pair_256', float('nan')):.1f}")

    @app.command()
    def promote(domain: str, version: str,
                expected_active: Optional[str] = typer.Option(
                    None, "--expected-active", help="The version this promote replaces ('none': no version is "
                    "active). Default: the one active when the command starts. If another is active when the "
                    "registry flips, nothing changes and the exit status is 3.")) -> None:
        """Make VERSION (2 or v2) the domain's active model; refused if it does not verify and load."""
        from state.registry import CURRENT, Conflict, RegistryError
        from state.ids import InvalidId

        settings = _settings()
        expected = CURRENT if expected_active is None else None if expected_active == "none" else expected_active
        try:
            reg = _registry(settings)
            if expected is CURRENT:  # the one active now: a promote during the warm-up is a conflict
                expected = reg.active_version(domain)
            warm = _warm(settings, reg, domain, version)
            name = reg.promote(domain, version, check=_load_check(settings), expected_active=expected)
        except Conflict as e:
            typer.secho(f"conflict: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(3) from None
        except (RegistryError, InvalidId) as e:
            _fail(str(e))
        typer.echo(f"{model_id(domain, name)} is active" + (f" (warm: {warm['embedded']} of {warm['passages']} "
                                                             f"passages embedded on this node)" if warm else ""))

    @app.command()
    def rollback(domain: str) -> None:
        """Re-activate the version that was active before the current one."""
        from state.registry import RegistryError
        from state.ids import InvalidId

        try:
            name = _registry().rollback(domain)
        except (RegistryError, InvalidId) as e:
            _fail(str(e))
        typer.echo(f"{model_id(domain, name)} is active")

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
        """Export the base model to ONNX int8, and the multilingual base when one is configured (done
        automatically on first `make serve`)."""
        from exporters.base_model import ensure_base

        s = _settings()
        for model in filter(None, (s.base_model, s.multilingual_base)):
            typer.echo(ensure_base(s, model))
