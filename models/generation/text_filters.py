"""Quality filters for generated text, each with a named reason. Plain functions, no Beam.

Per-text filters (`check_text`, first failure wins, in this order):
- `too_short` / `too_long`: character length outside [min_chars, max_chars];
- `bad_chars`: control, private-use, surrogate or unassigned code points, or U+FFFD (a decoding
  error). Format characters are allowed: ZWJ/ZWNJ are part of several scripts and of emoji;
- `low_letter_share`: letters (Unicode L*, with their combining marks M*) are fewer than
  `min_letter_share` of the non-space characters: markup, numbers or symbol soup;
- `script_mismatch`: the text's dominant script is not one of the corpus's scripts. A letter's
  script is the first word of its Unicode name (LATIN, CYRILLIC, CJK, HIRAGANA, ARABIC, ...);
  the corpus's scripts are those holding at least `SCRIPT_MIN_SHARE` of the letters of a corpus
  sample. This catches a generator drifting into another language's script (e.g. Chinese in an
  English corpus) without assuming which language the corpus is in;
- `repetitive`: repeated n-gram ratio above `max_repeated_ngram_ratio` (degenerate loops);
- `label_mention` (only with `avoid_words`, e.g. the label names for sentiment): the text names
  a label, so it is trivially easy and unlike real rows ("This review is negative."). Matched
  case-insensitively between non-word characters; off by default because in topic tasks real
  texts name their topic.
Per prompt, `example_overlap`: the share of a generated text's character 5-grams found in one of
the examples its prompt showed (`copied_example` when too high: a copy is not a new example,
and MinHash Jaccard misses a short text cut out of a longer one).

Tokens for the n-grams: runs of word characters; in scripts written without spaces (CJK, kana,
Thai, Lao, Khmer, Myanmar, Tibetan) every character is a token. Ratio = share of the text's
n-grams that repeat an earlier n-gram of the same text (0 for texts with fewer than n tokens).

Near-duplicates (`minhash`, `NearDupIndex`): MinHash (datasketch) over character 5-gram shingles
of the casefolded text, so no word segmentation is needed; candidates from MinHashLSH are kept
only when their estimated Jaccard similarity reaches the threshold. Memory: one signature is
`num_perm` uint32 values (4 bytes each, datasketch's default affine32 scheme); the LSH tables
cost more than the signatures (a dict entry holding a set per band per row): measured, a
`DuplicateGuard` over 10,000 rows at num_perm=128 and threshold 0.7 holds ~3.4 KB per row.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from potstill.rows.records import dedup_key

SCRIPT_MIN_SHARE = 0.05      # a script is the corpus's when it holds >= 5% of a sample's letters
SHINGLE_CHARS = 5
MINHASH_SEED = 1
MINHASH_SCHEME = "affine32"
_UNSPACED = {"CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"}
_BAD_CATEGORIES = {"Cc", "Co", "Cs", "Cn"}
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Verdict:
    reason: str
    detail: str


@dataclass(frozen=True)
class TextRules:
    min_chars: int = 10
    max_chars: int = 1000
    min_letter_share: float = 0.5
    max_repeated_ngram_ratio: float = 0.3
    ngram: int = 3
    scripts: frozenset[str] | None = None   # the corpus's scripts; None skips the check
    avoid_words: tuple[str, ...] = ()       # words a text must not contain (label_mention)


def letter_script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def script_counts(text: str) -> Counter:
    return Counter(letter_script(ch) for ch in text if unicodedata.category(ch).startswith("L"))


def corpus_scripts(texts: Iterable[str], min_share: float = SCRIPT_MIN_SHARE) -> frozenset[str]:
    """Scripts holding at least `min_share` of all letters in `texts` (empty if no letters)."""
    total = Counter()
    for t in texts:
        total.update(script_counts(t))
    n = sum(total.values())
    return frozenset(s for s, c in total.items() if n and c / n >= min_share)


def tokens(text: str) -> list[str]:
    out = []
    for word in _WORD.findall(text.casefold()):
        if any(letter_script(ch) in _UNSPACED for ch in word):
            out.extend(word)  # no spaces between words in these scripts: characters are tokens
        else:
            out.append(word)
    return out


def repeated_ngram_ratio(text: str, n: int = 3) -> float:
    toks = tokens(text)
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def check_text(text: str, rules: TextRules) -> Verdict | None:
    """The first filter `text` fails, or None when it passes them all."""
    if len(text) < rules.min_chars:
        return Verdict("too_short", f"{len(text)} chars < min_chars={rules.min_chars}")
    if len(text) > rules.max_chars:
        return Verdict("too_long", f"{len(text)} chars > max_chars={rules.max_chars}")
    bad = [ch for ch in text if unicodedata.category(ch) in _BAD_CATEGORIES or ch == "\ufffd"]
    if bad:
        return Verdict("bad_chars", f"{len(bad)} control/unassigned/replacement chars, first U+{ord(bad[0]):04X}")
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(1 for ch in visible if unicodedata.category(ch)[0] in "LM")
    share = letters / len(visible) if visible else 0.0
    if share < rules.min_letter_share:
        return Verdict("low_letter_share", f"letters are {share:.2f} of the characters < {rules.min_letter_share}")
    if rules.scripts:
        counts = script_counts(text)
        dominant = counts.most_common(1)[0][0] if counts else None
        if dominant is not None and dominant not in rules.scripts:
            return Verdict("script_mismatch", f"mostly {dominant}; corpus scripts {sorted(rules.scripts)}")
    ratio = repeated_ngram_ratio(text, rules.ngram)
    if ratio > rules.max_repeated_ngram_ratio:
        return Verdict("repetitive", f"repeated {rules.ngram}-gram ratio {ratio:.2f} > {rules.max_repeated_ngram_ratio}")
    folded = text.casefold()
    for word in rules.avoid_words:
        if re.search(rf"(?<!\w){re.escape(word.casefold())}(?!\w)", folded):
            return Verdict("label_mention", f"the text names {word!r}")
    return None


def example_overlap(text: str, examples) -> float:
    """Largest share of the text's character 5-grams found in any one of `examples`."""
    mine = set(shingles(text))
    if not mine:
        return 0.0
    return max((len(mine & set(shingles(e))) / len(mine) for e in examples), default=0.0)


# --- near duplicates --------------------------------------------------------------------------

def shingles(text: str, k: int = SHINGLE_CHARS) -> list[bytes]:
    """Character k-grams of the visible text (records.dedup_key: invisible and compatibility
    characters never hide a near-duplicate or a test leak), case-folded."""
    t = " ".join(dedup_key(text).casefold().split())
    if len(t) <= k:
        return [t.encode("utf-8")]
    return list({t[i:i + k].encode("utf-8") for i in range(len(t) - k + 1)})


@functools.lru_cache(maxsize=4)
def _permutations(num_perm: int):
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME).permutations


def minhash(text: str, num_perm: int) -> np.ndarray:
    """The text's MinHash signature (uint32[num_perm]); compact and picklable."""
    from datasketch import MinHash

    # Reusing the permutations is 5x faster than drawing them per text, same values.
    m = MinHash(num_perm=num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME,
                permutations=_permutations(num_perm))
    m.update_batch(shingles(text))
    return m.hashvalues


class NearDupIndex:
    """MinHashLSH over signatures; `match` returns the most similar indexed key at or above the
    threshold (by estimated Jaccard), so LSH false positives never count as duplicates."""

    def __init__(self, threshold: float, num_perm: int):
        from datasketch import MinHashLSH

        self.threshold, self.num_perm = threshold, num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._sigs: dict = {}

    def _lean(self, signature: np.ndarray):
        from datasketch import LeanMinHash

        return LeanMinHash(seed=MINHASH_SEED, hashvalues=signature, scheme=MINHASH_SCHEME)

    def __len__(self) -> int:
        return len(self._sigs)

    def add(self, key, signature: np.ndarray) -> None:
        if key in self._sigs:
            return
        self._sigs[key] = signature  # the bare array: a LeanMinHash per row would double the memory
        self.lsh.insert(key, self._lean(signature))

    def match(self, signature: np.ndarray) -> tuple[object, float] | None:
        best = None
        for key in self.lsh.query(self._lean(signature)):
            sim = float(np.mean(signature == self._sigs[key]))  # = LeanMinHash.jaccard
            if sim >= self.threshold and (best is None or sim > best[1] or
                                          (sim == best[1] and str(key) < str(best[0]))):
                best = (key, sim)
        return best


@dataclass(frozen=True)
class Reference:
    source: str              # corpus | seed | test
    id: str
    signature: np.ndarray


class DuplicateGuard:
    """Exact and near duplicates of generated texts against the references and each other.

    Test rows get an index of their own, checked first: a generated text that (near-)duplicates
    a test row is a leak (`test_leak`) whatever else it resembles. Then corpus and seed rows
    (`exact_duplicate` / `near_duplicate`), then the generated texts kept so far, in the order
    `check` is called (the caller sorts them, so the survivor of a pair is deterministic).
    """

    def __init__(self, references: Iterable[Reference], threshold: float, num_perm: int):
        self.threshold, self.num_perm = threshold, num_perm
        self.ids: dict[str, str] = {}
        self.test = NearDupIndex(threshold, num_perm)
        self.refs = NearDupIndex(threshold, num_perm)
        self.generated = NearDupIndex(threshold, num_perm)
        for ref in references:
            if ref.source == "test" or ref.id not in self.ids:
                self.ids[ref.id] = ref.source  # an id in test and corpus counts as test
            (self.test if ref.source == "test" else self.refs).add((ref.source, ref.id), ref.signature)

    def check(self, text_id: str, signature: np.ndarray) -> Verdict | None:
        """None: keep it (and remember it); else why it is a duplicate."""
        source = self.ids.get(text_id)
        if source == "test":
            return Verdict("test_leak", f"identical to test row {text_id}")
        if source is not None:
            return Verdict("exact_duplicate", f"identical to {source} row {text_id}")
        for index, reason in ((self.test, "test_leak"), (self.refs, "near_duplicate"),
                              (self.generated, "near_duplicate")):
            hit = index.match(signature)
            if hit:
                (src, ref_id), sim = hit
                return Verdict(reason, f"estimated Jaccard {sim:.2f} >= {self.threshold} with {src} row {ref_id}")
        self.ids[text_id] = "generated"
        self.generated.add(("generated", text_id), signature)
        return None
