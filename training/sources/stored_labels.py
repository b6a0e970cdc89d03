"""Expert labels graded in the service (state/labels.py): the domain's grades, read straight from the
store, so a training run uses them without an export. Same rows and rules as labels.py."""
from __future__ import annotations

from state.labels import LabelStore
from state.store import Store
from training.examples import Example
from training.sources.labels import examples_from_rows


def examples_from_store(store: Store, domain: str) -> tuple[list[Example], dict]:
    rows = LabelStore(store).export_rows(domain)
    return examples_from_rows(((f"stored label {n} of domain {domain!r}", r) for n, r in enumerate(rows, 1)),
                              source="expert_labels")
