"""Training inputs for processes that must not import training (serving), as a child process.

    python -m training.inputs check --kind ragas|labels|beir --path PATH --name NAME
        reads the file (or BEIR directory) with the source that training uses and prints one JSON
        line: {"ok": true, "stats": {...}} or {"ok": false, "error": "NAME:LINE: problem"}
        (paths in messages are replaced by NAME, the file name the user knows)
    python -m training.inputs defaults
        prints the training options: their defaults (TrainConfig) and the options schema (types and
        ranges, JSON Schema) that a train request's `config` is checked against, as JSON

Only the light source modules are imported: no torch, no model.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from training.config import TrainConfig, options_schema
from training.examples import SourceError


def check(kind: str, path: Path) -> dict[str, Any]:
    if kind == "ragas":
        from training.sources.ragas import load_ragas

        ex, stats = load_ragas(path)
    elif kind == "labels":
        from training.sources.labels import load_labels

        ex, stats = load_labels(path)
    elif kind == "beir":
        from training.sources.beir import beir_examples, load_beir

        splits = sorted(p.stem for p in (path / "qrels").glob("*.tsv")) if (path / "qrels").is_dir() else []
        if not splits:
            raise SourceError(f"{path}/qrels: no <split>.tsv file (BEIR layout: corpus.jsonl, queries.jsonl, "
                              "qrels/train.tsv)")
        stats = {"splits": {}}
        ex = []
        for s in splits:
            data = load_beir(path, s)
            pairs = beir_examples(data)
            stats["splits"][s] = {"queries": len(data.queries), "pairs": len(pairs)}
            ex += pairs
        stats["corpus"] = len(data.corpus)
    else:
        raise SourceError(f"unknown kind {kind!r}")
    if not ex:
        raise SourceError(f"{path}: no usable rows")
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.inputs")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--kind", required=True, choices=("ragas", "labels", "beir"))
    c.add_argument("--path", required=True, type=Path)
    c.add_argument("--name", required=True)
    sub.add_parser("defaults")
    a = p.parse_args(argv)
    if a.cmd == "defaults":
        out: dict[str, Any] = {"defaults": TrainConfig().to_dict(), "schema": options_schema()}
    else:
        try:
            out = {"ok": True, "stats": check(a.kind, a.path)}
        except SourceError as e:
            out = {"ok": False, "error": str(e).replace(str(a.path), a.name)}
        except UnicodeDecodeError:
            out = {"ok": False, "error": f"{a.name}: not UTF-8 text"}
        except (csv.Error, OSError) as e:
            out = {"ok": False, "error": f"{a.name}: {e}".replace(str(a.path), a.name)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
