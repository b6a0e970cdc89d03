"""The lexical side of a domain model, torch-free: language detection, per-language analysis, the
domain's term statistics (`lexical.json.gz` in a version) and BM25 of a query against the request's
passages in numpy.

The same `Analyzer` feeds the BM25 first stage of training and evaluation (training/bm25.py, bm25s over
pre-analysed tokens) and the served lexical scorer, so with the corpus statistics the numpy scorer gives
the first stage's scores (tests/test_lexical.py checks it against bm25s).

Scoring formula (bm25s' "lucene" variant, the first stage's):
    score(q, d) = sum over query tokens t (with repeats) of
                  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
Unknown terms (not in the stored vocabulary: df = 0) get idf(df=0) = ln(1 + (N + 0.5) / 0.5), the
largest IDF the domain can give: an unseen term is rarer than anything seen. |d| counts every analysed
token of the passage, unknown ones included.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

K1, B = 0.9, 0.4  # chosen on the dev splits of SciFact, NFCorpus and JaQuAD (training/README.md)

# -- language detection ---------------------------------------------------------------------------

_KANA = re.compile(r"[\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")
_SCRIPTS = {"ru": re.compile(r"[\u0400-\u04ff]"), "el": re.compile(r"[\u0370-\u03ff]"),
            "ar": re.compile(r"[\u0600-\u06ff]")}
_LETTER = re.compile(r"[^\W\d_]")
_WORD = re.compile(r"[^\W\d_]+")

# ISO 639-1 -> PyStemmer algorithm
STEMMERS = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian",
            "nl": "dutch", "pt": "portuguese", "sv": "swedish", "no": "norwegian", "da": "danish",
            "tr": "turkish", "ru": "russian", "el": "greek", "ar": "arabic"}
# ISO 639-1 -> bm25s stopword list
_STOPWORD_LISTS = {"en": "STOPWORDS_EN", "de": "STOPWORDS_GERMAN", "fr": "STOPWORDS_FRENCH",
                   "es": "STOPWORDS_SPANISH", "it": "STOPWORDS_ITALIAN", "nl": "STOPWORDS_DUTCH",
                   "pt": "STOPWORDS_PORTUGUESE", "sv": "STOPWORDS_SWEDISH", "no": "STOPWORDS_NORWEGIAN",
                   "da": "STOPWORDS_DANISH", "tr": "STOPWORDS_TURKISH", "ru": "STOPWORDS_RUSSIAN"}
_LATIN = ("en", "de", "fr", "es", "it", "nl", "pt", "sv", "no", "da", "tr")
SPACELESS = frozenset({"ja", "zh"})  # written without spaces: character n-grams


@lru_cache(maxsize=1)
def _stopword_module():
    """bm25s' stopword lists, loaded from their file alone: importing the bm25s package pulls numba
    (~1 s and its memory) into every pool replica, and the lists are plain tuples."""
    spec = importlib.util.find_spec("bm25s")
    path = Path(spec.submodule_search_locations[0]) / "stopwords.py"  # type: ignore[union-attr, index]
    mod_spec = importlib.util.spec_from_file_location("_bm25s_stopwords", path)
    module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
    mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@lru_cache(maxsize=None)
def stopwords(language: str) -> frozenset[str]:
    name = _STOPWORD_LISTS.get(language)
    return frozenset(getattr(_stopword_module(), name)) if name else frozenset()


def detect_language(texts: Iterable[str], max_chars: int = 200_000) -> str:
    """ISO 639-1 code of the dominant language of `texts` (a sample of a domain's passages and queries,
    or one request). Script first, as a share of letters: kana -> ja, Hangul -> ko, Han without kana ->
    zh, Cyrillic -> ru, Greek -> el, Arabic -> ar. Latin script: the language whose stopword list covers
    the largest share of the words (function words are any language's most frequent). Default "en".
    No library here does this without a model download; script shares + stopwords are enough to pick
    an analyzer."""
    buf, n = [], 0
    for t in texts:
        buf.append(t[: max_chars - n])
        n += len(buf[-1])
        if n >= max_chars:
            break
    text = unicodedata.normalize("NFKC", " ".join(buf))
    letters = max(1, len(_LETTER.findall(text)))
    if len(_KANA.findall(text)) / letters > 0.05:
        return "ja"
    if len(_HANGUL.findall(text)) / letters > 0.2:
        return "ko"
    if len(_HAN.findall(text)) / letters > 0.2:
        return "zh"
    for code, rx in _SCRIPTS.items():
        if len(rx.findall(text)) / letters > 0.3:
            return code
    counts = Counter(w.lower() for w in _WORD.findall(text))
    total = sum(counts.values())
    if not total:
        return "en"
    shares = {lang: sum(c for w, c in counts.items() if w in stopwords(lang)) / total for lang in _LATIN}
    best = max(shares, key=lambda lang: shares[lang])
    return best if shares[best] > 0 else "en"


# -- analysis -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s' default: words of 2+ characters
_CJK = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3005\u3006\u30fc"
# a CJK/kana run, or a run of other letters/digits (Latin words and numbers inside Japanese text)
_SPACELESS_SPLIT = re.compile(f"([{_CJK}]+)|([^\\W_{_CJK}]+)")


@dataclass
class Analyzer:
    """Text -> index terms for one language.

    Space-delimited languages: NFKC, lowercase, words of 2+ characters, the language's stopwords out,
    PyStemmer stem (a language without a stemmer keeps its words as they are).
    Japanese/Chinese: NFKC, lowercase; runs of CJK/kana characters become character n-grams of the
    sizes in `ngrams` (a run shorter than every n stays itself); other runs (Latin words, numbers) stay
    words.
    """
    language: str
    ngrams: tuple[int, ...] = (1, 2)
    stem: bool = True
    remove_stopwords: bool = True
    _local: threading.local = field(default_factory=threading.local, repr=False, compare=False)
    _stop: frozenset = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        self.ngrams = tuple(sorted(self.ngrams))
        if self.language not in SPACELESS and self.remove_stopwords:
            self._stop = stopwords(self.language)

    def _stemmer(self):
        """PyStemmer objects are not thread-safe and the pool scores from several threads: one each."""
        if not self.stem or self.language not in STEMMERS:
            return None
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            import Stemmer

            stemmer = self._local.stemmer = Stemmer.Stemmer(STEMMERS[self.language])
        return stemmer

    def config(self) -> dict:
        return {"language": self.language, "ngrams": list(self.ngrams), "stem": self.stem,
                "remove_stopwords": self.remove_stopwords}

    @classmethod
    def from_config(cls, c: dict) -> "Analyzer":
        return cls(str(c["language"]), tuple(c.get("ngrams", (1, 2))), bool(c.get("stem", True)),
                   bool(c.get("remove_stopwords", True)))

    def __call__(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text).lower()
        if self.language in SPACELESS:
            return self._spaceless(text)
        words = [w for w in _TOKEN.findall(text) if w not in self._stop]
        stemmer = self._stemmer()
        return stemmer.stemWords(words) if stemmer is not None else words

    def _spaceless(self, text: str) -> list[str]:
        out: list[str] = []
        for cjk, word in _SPACELESS_SPLIT.findall(text):
            if word:
                out.append(word)
                continue
            m = len(cjk)
            if m < self.ngrams[0]:
                out.append(cjk)
                continue
            for n in self.ngrams:
                out.extend(cjk[i:i + n] for i in range(m - n + 1))
        return out

    def batch(self, texts: Sequence[str]) -> list[list[str]]:
        return [self(t) for t in texts]


# -- statistics and scoring -----------------------------------------------------------------------

def idf(df: np.ndarray, n_docs: int) -> np.ndarray:
    df = np.asarray(df, dtype=np.float64)
    return np.log1p((n_docs - df + 0.5) / (df + 0.5))


@dataclass
class LexicalStats:
    """A version's lexical scorer (lexical.json.gz): analyzer, N, avgdl, df per term, k1, b."""
    analyzer: Analyzer
    n_docs: int
    avgdl: float
    df: dict[str, int]
    k1: float = K1
    b: float = B

    @classmethod
    def fit(cls, tokenized_docs: Iterable[list[str]], analyzer: Analyzer, k1: float = K1,
            b: float = B) -> "LexicalStats":
        """From analysed passages: the domain's corpus, or one request's candidates (request-local)."""
        df: Counter = Counter()
        n = total = 0
        for toks in tokenized_docs:
            df.update(set(toks))
            n += 1
            total += len(toks)
        return cls(analyzer, n, total / max(1, n), dict(df), k1, b)

    def idf(self, terms: Sequence[str]) -> np.ndarray:
        return idf(np.array([self.df.get(t, 0) for t in terms], dtype=np.float64), self.n_docs)

    def save(self, path: str | Path) -> None:
        data = {"format": 1, "analyzer": self.analyzer.config(), "n_docs": self.n_docs, "avgdl": self.avgdl,
                "k1": self.k1, "b": self.b, "unknown_term_df": 0, "df": dict(sorted(self.df.items()))}
        # no name, mtime 0: the same statistics give the same bytes (and sha256) wherever they are written
        with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
            f.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> "LexicalStats":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            d = json.load(f)
        if d.get("format") != 1:
            raise ValueError(f"{path}: unknown lexical statistics format {d.get('format')!r}")
        return cls(Analyzer.from_config(d["analyzer"]), int(d["n_docs"]), float(d["avgdl"]),
                   {str(k): int(v) for k, v in d["df"].items()}, float(d["k1"]), float(d["b"]))


def bm25(query_tokens: list[str], doc_tokens: list[list[str]], stats: LexicalStats) -> np.ndarray:
    """BM25 of one analysed query against analysed passages. Query tokens count with repeats (as in
    bm25s): a term twice in the query weighs twice."""
    qcount = Counter(query_tokens)
    n = len(doc_tokens)
    if not qcount or n == 0:
        return np.zeros(n)
    pos = {t: j for j, t in enumerate(qcount)}
    tf = np.zeros((n, len(pos)), dtype=np.float64)
    dl = np.empty(n, dtype=np.float64)
    for i, toks in enumerate(doc_tokens):
        dl[i] = len(toks)
        for t in toks:
            j = pos.get(t)
            if j is not None:
                tf[i, j] += 1.0
    weights = stats.idf(list(pos)) * np.fromiter(qcount.values(), dtype=np.float64, count=len(pos))
    norm = stats.k1 * (1.0 - stats.b + stats.b * dl / max(stats.avgdl, 1e-9))
    return (tf / (tf + norm[:, None])) @ weights


class LexicalScorer:
    """BM25 of a query against a request's passages: with a domain's stored statistics, or (stats=None)
    with the statistics of the request's own passages (for a model that has no domain statistics)."""

    def __init__(self, analyzer: Analyzer, stats: LexicalStats | None = None):
        self.analyzer, self.stats = analyzer, stats

    def __call__(self, query: str, passages: Sequence[str]) -> np.ndarray:
        docs = self.analyzer.batch(passages)
        stats = self.stats or LexicalStats.fit(docs, self.analyzer)
        return bm25(self.analyzer(query), docs, stats)

    @classmethod
    def request_local(cls, language: str) -> "LexicalScorer":
        return cls(_default_analyzer(language))


@lru_cache(maxsize=32)
def _default_analyzer(language: str) -> Analyzer:
    return Analyzer(language)
