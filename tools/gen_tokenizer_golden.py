#!/usr/bin/env python3
"""Golden files for tests/test_tokenizer*.cc, made with the reference implementations.

  python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install "transformers<5" tokenizers sentencepiece protobuf
  /tmp/tokvenv/bin/python tools/gen_tokenizer_golden.py [--shared ../shared] [--out tests/data/tokenizer]

Writes into --out:
  texts.json                 the test texts (multilingual, emoji ZWJ, code, whitespace runs, numbers, contractions)
  llama2_golden.json         HF LlamaTokenizerFast converted from shared/models/llama2-tokenizer/tokenizer.model
                             (legacy and Metaspace variants), libsentencepiece ids, decode strings, and a digest of
                             the ids of shared/data/wikitext-2-raw/wiki.test.raw
  bytelevel_llama3/ bytelevel_qwen2/   small byte-level BPE tokenizers trained here with LLaMA-3's / Qwen2's
                             pre-tokenizer regex (tokenizer.json + tokenizer_config.json) and golden.json
  llama2c_golden.json        ids from a Python port of llama2.c run.c encode() on shared/models/stories260K/tok512.bin
The Meta-derived converted tokenizer.json is NOT written: the C++ test rebuilds it from the .model's pieces.
Versions used are recorded in each golden file.
"""
import argparse
import hashlib
import json
import os
import struct
import sys
import unicodedata

import sentencepiece as spm
import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
            r"\s*[\r\n]+|\s+(?!\S)|\s+")

TEXTS = [
    "Hello world",
    " Hello world",
    "Once upon a time, there was a little girl named Lily.",
    "don't I'LL we've they'RE she's it'd You'm",
    "Numbers: 1234567 and 3.14159, 2024-11-23, 00042, 1,000,000",
    "tabs\tand\t\ttabs\n\nnew paragraph\n\n\nthree newlines   three spaces    four spaces",
    "    leading spaces and trailing spaces    ",
    "\n\nstarts with newlines",
    "Accents: café naïve résumé Ærøskøbing Zürich façade São Paulo",
    "中文测试：你好，世界！日本語のテキスト。한국어 텍스트",
    "العربية: مرحبا بالعالم",
    "Emoji: 👋🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🤖",
    "def f(x):\n    return x ** 2  # square\n\nif __name__ == '__main__':\n\tprint(f(3))",
    "int main() { std::vector<int> v{1, 2, 3}; for (auto& x : v) x += 1; return 0; }",
    "Mixed: The café served 12 croissants 🥐 to 3 customers — «très bien» said Zoë.",
    "   ",
    "a",
    "",
    "Ελληνικά κείμενα και Русский текст и עברית",
    "URL https://example.com/path?q=1&r=two#frag e-mail: someone@example.org",
]


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")


def versions():
    return {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
            "sentencepiece": spm.__version__}


def ids_digest(ids):
    return hashlib.sha256(struct.pack("<%di" % len(ids), *ids)).hexdigest()


def texts_with_specials(specials):
    return [f"{specials[0]}Hello{specials[1]} world", f"a {specials[0]} b {specials[1]}\n{specials[0]}"]


def json_variants(tokenizer_json_text, variants, texts):
    """HF ids/decodes after replacing top-level parts of a tokenizer.json (the C++ test applies the same edits)."""
    out = []
    for edit in variants:
        tj = json.loads(tokenizer_json_text)
        tj.update(edit)
        tok = Tokenizer.from_str(json.dumps(tj))
        ids = [tok.encode(t).ids for t in texts]
        out.append({"edit": edit, "ids": ids, "decode": [tok.decode(i) for i in ids]})
    return out


BYTELEVEL_VARIANTS = [
    {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}},
    {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "MergedWithPrevious", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}},
    {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": False},
        {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext", "invert": False},
        {"type": "Split", "pattern": {"Regex": "[,.;]"}, "behavior": "Removed", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}},
    {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{L}+"}, "behavior": "Contiguous", "invert": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}},
    {"normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
        {"type": "Replace", "pattern": {"String": "o"}, "content": "0"},
        {"type": "Strip", "strip_left": True, "strip_right": True}]}},
    {"decoder": None},
]


# ---------------------------------------------------------------- LLaMA-2 (SentencePiece-style BPE)
def gen_llama2(shared, out):
    from transformers import LlamaTokenizer, LlamaTokenizerFast

    model = os.path.join(shared, "models/llama2-tokenizer/tokenizer.model")
    legacy = LlamaTokenizerFast(vocab_file=model, from_slow=True, legacy=True, add_prefix_space=True)
    meta = LlamaTokenizerFast(vocab_file=model, from_slow=True, legacy=False, add_prefix_space=True)
    slow = LlamaTokenizer(vocab_file=model, legacy=True)
    sp = spm.SentencePieceProcessor(model_file=model)
    texts = TEXTS + texts_with_specials(["<s>", "</s>"]) + ["<unk> x"]
    g = {"versions": versions(), "texts": texts, "hf_legacy": [], "hf_metaspace": [], "spm": [], "slow": [],
         "decode": [], "decode_keep_special": []}
    for t in texts:
        ids = legacy(t)["input_ids"]
        g["hf_legacy"].append(ids)
        g["hf_metaspace"].append(meta(t)["input_ids"])
        g["spm"].append([sp.bos_id()] + sp.encode(t))
        g["slow"].append(slow(t)["input_ids"])
        g["decode"].append(legacy.decode(ids, skip_special_tokens=True))
        g["decode_keep_special"].append(legacy.decode(ids, skip_special_tokens=False))
    # The structure of the non-legacy conversion, so the C++ test can mutate its own json the same way.
    mj = json.loads(meta.backend_tokenizer.to_str())
    g["metaspace_pre_tokenizer"] = mj["pre_tokenizer"]
    g["metaspace_normalizer"] = mj["normalizer"]
    # Older Metaspace spelling: split on '▁', prepend always, Metaspace decoder.
    ms = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    g["variants"] = json_variants(legacy.backend_tokenizer.to_str(), [
        {"normalizer": None, "pre_tokenizer": ms, "decoder": ms},
        {"normalizer": None, "pre_tokenizer": dict(ms, prepend_scheme="never", split=False)},
    ], TEXTS)
    lj = json.loads(legacy.backend_tokenizer.to_str())
    g["legacy_merges_count"] = len(lj["model"]["merges"])
    g["legacy_merges_head"] = [list(m) if not isinstance(m, str) else m.split(" ") for m in lj["model"]["merges"][:50]]
    g["legacy_merges_digest"] = hashlib.sha256(
        "\n".join(" ".join(m) if not isinstance(m, str) else m for m in lj["model"]["merges"]).encode()).hexdigest()
    wiki = os.path.join(shared, "data/wikitext-2-raw/wiki.test.raw")
    with open(wiki, encoding="utf-8", newline="") as f:  # raw bytes: the file has CRLF line ends
        wtext = f.read()
    wids = legacy(wtext)["input_ids"]
    g["wiki_test"] = {"path": "data/wikitext-2-raw/wiki.test.raw", "n_ids": len(wids), "sha256_ids_le32": ids_digest(wids),
                      "head": wids[:64]}
    write_json(os.path.join(out, "llama2_golden.json"), g)
    diff = [i for i in range(len(texts)) if g["hf_legacy"][i] != g["spm"][i]]
    print(f"llama2: {len(texts)} texts, wiki {len(wids)} ids; HF vs libsentencepiece differ on texts {diff}")


# ---------------------------------------------------------------- byte-level BPE (LLaMA-3 / Qwen2 style)
def train_bytelevel(kind, corpus, out_dir, wiki_text):
    os.makedirs(out_dir, exist_ok=True)
    tok = Tokenizer(models.BPE(ignore_merges=(kind == "llama3")))
    regex = LLAMA3_RE if kind == "llama3" else QWEN2_RE
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    if kind == "llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=256 + 420, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    # Added tokens beyond the specials: lstrip/rstrip special, a normalized non-special one, a single_word one.
    if kind == "llama3":
        tok.add_special_tokens([AddedToken("<|mask|>", lstrip=True, rstrip=True, normalized=False, special=True)])
        tok.add_tokens([AddedToken("hello world", normalized=True, special=False),
                        AddedToken("dog", single_word=True, normalized=False, special=False)])
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                          special_tokens=[("<|begin_of_text|>", bos)]),
        ])
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
               "eos_token": "<|end_of_text|>", "clean_up_tokenization_spaces": True, "model_max_length": 131072}
    else:
        tok.add_tokens([AddedToken("<tool_call>", normalized=False, special=False)])
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        cfg = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>", "errors": "replace", "add_prefix_space": False,
               "clean_up_tokenization_spaces": False, "model_max_length": 32768}
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    write_json(os.path.join(out_dir, "tokenizer_config.json"), cfg)

    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(out_dir)
    texts = list(TEXTS)
    texts += texts_with_specials(specials[:2])
    if kind == "llama3":
        texts += ["x <|mask|>  y", "say hello world twice: hello world!", "hotdog dog dog_ (dog)", "\xa0<|mask|>\xa0z",
                  "clean up : a , b . c ! d ? e n't f 's g 've h 're i 'm j ' k"]
    else:
        texts += ["call <tool_call>{\"a\": 1}</tool_call> done", "<|im_start|>user\nhi<|im_end|>\n"]
    nfd_texts = [unicodedata.normalize("NFD", t) for t in TEXTS if unicodedata.normalize("NFD", t) != t]
    for t in texts:
        assert unicodedata.is_normalized("NFC", t), "test texts must be NFC (the C++ NFC normalizer is identity)"
    g = {"versions": versions(), "texts": texts, "ids": [], "ids_no_special": [], "decode": [],
         "decode_keep_special": [], "bos_id": hf.bos_token_id, "eos_id": hf.eos_token_id, "vocab_size": len(hf)}
    for t in texts:
        ids = hf(t)["input_ids"]
        g["ids"].append(ids)
        g["ids_no_special"].append(hf(t, add_special_tokens=False)["input_ids"])
        # transformers' decode: tokenizers' decode, then clean_up_tokenization when tokenizer_config asks for it
        g["decode"].append(hf.decode(ids, skip_special_tokens=True))
        g["decode_keep_special"].append(hf.decode(ids, skip_special_tokens=False))
    if kind == "llama3":
        g["variants"] = json_variants(open(os.path.join(out_dir, "tokenizer.json")).read(), BYTELEVEL_VARIANTS, TEXTS)
    # decomposed (NFD) texts: Qwen2's NFC normalizer recomposes them, LLaMA-3's tokenizer has no normalizer
    g["nfd_texts"] = nfd_texts
    g["nfd_ids"] = [hf(t)["input_ids"] for t in nfd_texts]
    # decode of a byte sequence cut inside a code point: ByteLevel renders it lossily
    cut = hf("中文", add_special_tokens=False)["input_ids"]
    g["decode_partial"] = {"ids": cut[:1], "text": hf.backend_tokenizer.decode(cut[:1])}
    if wiki_text is not None:  # a large real text: PCRE2 vs Oniguruma on the pre-tokenizer regex, and speed
        wids = hf(wiki_text)["input_ids"]
        g["wiki_test"] = {"path": "data/wikitext-2-raw/wiki.test.raw", "n_ids": len(wids),
                          "sha256_ids_le32": ids_digest(wids), "head": wids[:64]}
    write_json(os.path.join(out_dir, "golden.json"), g)
    print(f"{kind}: vocab {len(hf)}, {len(texts)} texts")


# ---------------------------------------------------------------- llama2.c tok512.bin
def read_llama2c(path):
    data = open(path, "rb").read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off, vocab, scores = 4, [], []
    while off < len(data):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        vocab.append(data[off:off + n])
        scores.append(score)
        off += n
    return vocab, scores


def llama2c_encode(vocab, scores, text, bos=True, eos=False):
    """Port of llama2.c run.c encode(): per-code-point lookup with byte fallback (+3), then greedy best-score merges."""
    lookup = {}
    for i, v in enumerate(vocab):
        lookup.setdefault(v, i)  # run.c bsearches a sorted copy; pieces are unique here
    tokens = [1] if bos else []
    raw = text.encode("utf-8")
    if raw:
        tokens.append(lookup[b" "])  # add_dummy_prefix
    i = 0
    while i < len(raw):
        j = i + 1
        while j < len(raw) and (raw[j] & 0xC0) == 0x80 and j - i < 4:
            j += 1
        piece = raw[i:j]
        if piece in lookup:
            tokens.append(lookup[piece])
        else:
            tokens.extend(b + 3 for b in piece)
        i = j
    while True:
        best, best_id, best_idx = -1e10, -1, -1
        for k in range(len(tokens) - 1):
            tid = lookup.get(vocab[tokens[k]] + vocab[tokens[k + 1]], -1)
            if tid != -1 and scores[tid] > best:
                best, best_id, best_idx = scores[tid], tid, k
        if best_idx == -1:
            break
        tokens[best_idx:best_idx + 2] = [best_id]
    if eos:
        tokens.append(2)
    return tokens


def llama2c_decode(vocab, ids):
    """run.c decode() for a sequence (strips the space after BOS, turns <0xNN> into bytes)."""
    out = b""
    prev = -1
    for t in ids:
        piece = vocab[t]
        if prev == 1 and piece.startswith(b" "):
            piece = piece[1:]
        if piece.startswith(b"<0x") and len(piece) == 6 and piece.endswith(b">"):
            piece = bytes([int(piece[3:5], 16)])
        if t not in (1, 2):
            out += piece
        prev = t
    return out.decode("utf-8", errors="replace")


def gen_llama2c(shared, out):
    path = os.path.join(shared, "models/stories260K/tok512.bin")
    vocab, scores = read_llama2c(path)
    assert vocab[403] == b" Once", vocab[403]
    texts = [t for t in TEXTS]
    g = {"versions": versions(), "texts": texts, "ids": [], "decode": []}
    for t in texts:
        ids = llama2c_encode(vocab, scores, t)
        g["ids"].append(ids)
        g["decode"].append(llama2c_decode(vocab, ids))
    # Cross-check: the same conversion done in Python with transformers' generate_merges gives the same ids in HF.
    from transformers.convert_slow_tokenizer import generate_merges
    pieces = []
    for i, v in enumerate(vocab):
        s = v.decode("utf-8")
        if i in (1, 2):
            s = s.strip("\n")
        elif not (len(s) == 6 and s.startswith("<0x")):
            s = s.replace(" ", "\u2581")
        pieces.append(s)
    vmap = {p: i for i, p in enumerate(pieces)}
    merges = generate_merges(vmap, [(p, s) for p, s in zip(pieces, scores)])
    tok = Tokenizer(models.BPE(vmap, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(p, normalized=False, special=True) for p in pieces[:3]])
    mismatches = [t for t, ids in zip(texts, g["ids"]) if [1] + tok.encode(t, add_special_tokens=False).ids != ids]
    print(f"llama2c: {len(texts)} texts; HF-converted vs run.c port mismatches: {len(mismatches)}")
    for t in mismatches:
        print("   mismatch:", repr(t))
    g["hf_converted_mismatches"] = mismatches
    g["n_merges"] = len(merges)
    g["merges_head"] = [list(m) for m in merges[:20]]
    write_json(os.path.join(out, "llama2c_golden.json"), g)


# ---------------------------------------------------------------- NFC (Qwen2's normalizer)
def gen_nfc(out):
    nfc = normalizers.NFC()
    tricky = ["e\u0301", "A\u030A\u0323", "\u1E0B\u0323", "\u1100\u1161\u11A8", "\u1100\u1161", "\uAC00\u11A8",
              "\u0344", "\u212B", "\u0958", "a\u0323\u0302", "a\u0302\u0323", "a\u0301\u0301", "\u0061\u0315\u0300\u05AE\u0300b",
              "cafe\u0301 Zu\u0308rich n\u0303", "\u00C5\u2126\u1E9B\u0323", "\uFB01 \u2460 \u00BD", "x\u0327\u0301y",
              "\u0CCA\u0CC6\u0CC2\u0CD5", "\u0B47\u0B3E\u0B57", "\U0001D15E\U00011099\U000110BA"]
    decomposables = [cp for cp in range(0x110000)
                     if not 0xD800 <= cp <= 0xDFFF and unicodedata.decomposition(chr(cp))
                     and not unicodedata.decomposition(chr(cp)).startswith("<")]
    sweep = "|".join(unicodedata.normalize("NFD", chr(cp)) for cp in decomposables)
    sweep += "|" + "|".join(chr(0xAC00 + k * 97) for k in range(0, 11172 // 97))  # Hangul syllables
    sweep_nfd = unicodedata.normalize("NFD", sweep[-2000:])
    cases = tricky + [sweep, sweep_nfd]
    g = {"versions": versions(), "unicode_python": unicodedata.unidata_version, "input": cases,
         "hf_nfc": [nfc.normalize_str(c) for c in cases]}
    g["python_nfc_differs"] = [i for i, c in enumerate(cases) if unicodedata.normalize("NFC", c) != g["hf_nfc"][i]]
    write_json(os.path.join(out, "nfc_golden.json"), g)
    print(f"nfc: {len(cases)} cases, sweep of {len(decomposables)} decomposable code points; "
          f"python differs from HF on {g['python_nfc_differs']}")


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--shared", default=os.path.join(here, "..", "..", "shared"))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "tokenizer"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, "texts.json"), TEXTS)
    with open(os.path.join(a.shared, "data/tinystories/valid.txt"), encoding="utf-8") as f:
        corpus = f.read()[:300000].split("\n")
    corpus += TEXTS * 3  # so that CJK/Arabic/emoji byte sequences get some merges
    wiki = os.path.join(a.shared, "data/wikitext-2-raw/wiki.test.raw")
    with open(wiki, encoding="utf-8", newline="") as f:
        wiki_text = f.read()
    for kind in ("llama3", "qwen2"):
        train_bytelevel(kind, corpus, os.path.join(a.out, "bytelevel_" + kind), wiki_text)
    gen_nfc(a.out)
    gen_llama2(a.shared, a.out)
    gen_llama2c(a.shared, a.out)


if __name__ == "__main__":
    sys.exit(main())
