"""Text normalization and matching for the prompt gate, built to survive the usual evasions.

People dodge word lists with case, accents and look-alike letters ("nüde", Cyrillic "е"),
leetspeak ("NUD3", "p0rn"), separators ("N.u.d.e", "n u d e", "nu-de"), invisible characters and
stretched letters ("nuuude"). ``variants`` turns a text into a few token lists that undo those
tricks; ``TermIndex`` looks terms up in them on whole-token boundaries only, so "Scunthorpe",
"assistant" and "therapist" stay clean although they contain a denied term as a substring.

PII (e-mail, phone, street address, URL) is matched with regular expressions on the text itself,
since normalization would erase the very punctuation those patterns need.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from typing import Any

import snowballstemmer
from anyascii import anyascii

# Digits and symbols used as letters. "1" reads as i or l, so both readings are tried.
_LEET_DIGITS_I = str.maketrans("013456789", "oieasstbg")
_LEET_DIGITS_L = str.maketrans("013456789", "oleasstbg")
_LEET_SYMBOLS = str.maketrans({"@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e"})
# A symbol counts as a letter only inside a word ("sh!t", "$ex", "a$$"), never as sentence
# punctuation ("wow!").
_SYMBOL_IN_WORD = re.compile(r"(?:(?<=[a-z0-9])|(?<!\S))[@$!|+]+(?=[a-z0-9])|(?<=[a-z0-9])[@$]+(?!\S)")
_TOKEN = re.compile(r"[a-z0-9]+")
_HAS_LETTER = re.compile(r"[a-z]")
_HAS_DIGIT = re.compile(r"[0-9]")
_REPEATS = re.compile(r"(.)\1+")
# A run of this many single characters is read as one spelled-out word ("n u d e").
MIN_SPELLED_RUN = 3


def fold(text: str) -> str:
    """Lower-case ASCII look-alike of ``text``: accents dropped, look-alike letters mapped, invisibles removed."""
    if text.isascii():  # nothing to normalize, drop or map: most catalog text takes this path
        return text.lower()
    text = unicodedata.normalize("NFKD", text)
    # Combining marks (accents) and format characters (zero-width spaces, bidi controls) go.
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Mn", "Cf"))
    return anyascii(text).lower()


def _spell_out(tokens: list[str], keep_article: bool = False) -> list[str]:
    """Join runs of at least MIN_SPELLED_RUN single-character tokens: ``n u d e`` -> ``nude``.

    With ``keep_article``, a run's leading "a" or "i" stays a word of its own: "a n a k e d".
    """
    out: list[str] = []
    run: list[str] = []
    for token in [*tokens, ""]:
        if len(token) == 1:
            run.append(token)
            continue
        if keep_article and len(run) > MIN_SPELLED_RUN and run[0] in ("a", "i"):
            out.append(run.pop(0))
        if len(run) >= MIN_SPELLED_RUN:
            out.append("".join(run))
        else:
            out.extend(run)
        run = []
        if token:
            out.append(token)
    return out


def _deleet(token: str, table: dict[int, str]) -> str:
    """Read digits as letters, but only in tokens that mix both ("NUD3", not "1080")."""
    if _HAS_DIGIT.search(token) and _HAS_LETTER.search(token):
        return token.translate(table)
    return token


def variants(text: str) -> list[list[str]]:
    """The token lists a text may mean once evasions are undone (at most six, duplicates removed).

    Three splits (on every non-alphanumeric character; the same with a spelled-out word's leading
    article kept apart; on whitespace only with inner punctuation dropped, which rejoins "nu.de")
    times two readings of "1" (i or l).
    """
    folded = _folded(text)
    words = _TOKEN.findall(folded)
    split_space = [t for t in ("".join(_TOKEN.findall(chunk)) for chunk in folded.split()) if t]
    seen: list[list[str]] = []
    for tokens in (_spell_out(words), split_space, _spell_out(words, keep_article=True)):
        for table in (_LEET_DIGITS_I, _LEET_DIGITS_L):
            mapped = [_deleet(t, table) for t in tokens]
            if mapped not in seen:
                seen.append(mapped)
    return seen


@lru_cache(maxsize=4096)
def _variants(text: str) -> tuple[list[str], ...]:
    """``variants``, remembered: every index of a gate reads the same texts (do not mutate the lists)."""
    return tuple(variants(text))


def canonical(text: str) -> str:
    """The plain normalized reading of a text: folded, de-leeted, one space between tokens.

    The same as ``variants(text)[0]``, without computing the other variants.
    """
    tokens = _spell_out(_TOKEN.findall(_folded(text)))
    return " ".join(_deleet(t, _LEET_DIGITS_I) for t in tokens)


def _folded(text: str) -> str:
    return _SYMBOL_IN_WORD.sub(lambda m: m.group().translate(_LEET_SYMBOLS), fold(text))


def squeeze(text: str) -> str:
    """Collapse repeated characters: ``nuuude`` -> ``nude`` (a lookup key, not a match by itself)."""
    return _REPEATS.sub(r"\1", text)


@cache
def _stretch_pattern(term: str) -> re.Pattern[str]:
    """Matches the term with any of its letters repeated: ``ass`` -> ``a+s{2,}`` ("asss", not "as")."""
    parts = []
    for match in re.finditer(r"(.)\1*", term):
        ch, count = match.group(1), len(match.group())
        parts.append(re.escape(ch) + ("+" if count == 1 else f"{{{count},}}"))
    return re.compile("".join(parts))


MAX_MEMO = 200_000  # n-grams remembered per index (a few tens of MB at most)
MAX_TEXT_MEMO = 20_000  # whole texts remembered per index (texts are at most a few thousand characters)


@dataclass(frozen=True)
class TermHit:
    """One term found in a text: its group (category or list name), the term, and the words that matched.

    ``negated`` is true when every place the term occurs is in a negation scope ("no gore",
    "without nudity", "free of drugs", "alcohol-free"): the text names the term only to exclude it.
    """

    group: str
    term: str
    matched: str
    negated: bool = False


@dataclass(frozen=True)
class Occurrence:
    """One place a term occurs: the hit, which evasion variant of the text, and its token span."""

    hit: TermHit
    variant: int
    start: int
    end: int


# Words that, directly before a term, say the text excludes it; "free" directly after it does too
# ("alcohol-free"). A phrase that holds its own negation ("wearing no clothes") is a term of its own
# and is matched as a whole, so the scope never turns an unsafe phrase safe.
NEGATIONS = frozenset({"no", "without", "zero", "non"})
NEGATIONS_TWO_WORDS = frozenset({("free", "of")})
NEGATION_AFTER = frozenset({"free"})
# Endings an inflected word may add to a term's word once both share a Snowball stem: "undressing",
# "disembowelled", "seductively", "executed"; derivations such as "retardant" or "heroine" are not
# inflections, so they never read as the term.
INFLECTIONS = frozenset(
    {"", "s", "es", "d", "ed", "ing", "ly", "er", "ers", "est", "ies", "ied", "ily", "ness", "edly", "ingly"}
)
_STEMMER = snowballstemmer.stemmer("english")


@cache
def stem(word: str) -> str:
    """The Snowball (Porter2) English stem of one lower-case word."""
    return _STEMMER.stemWord(word)


def inflects(word: str, base: str) -> bool:
    """Whether ``word`` is ``base`` or an inflection of it (same stem, an inflectional ending).

    A final "e" or "y" of the base may give way ("execute" -> "executing", "bloody" -> "bloodied"),
    and a doubled final consonant is allowed ("strip" -> "stripping").
    """
    if word == base:
        return True
    if stem(word) != stem(base):
        return False
    common = 0
    for a, b in zip(word, base, strict=False):
        if a != b:
            break
        common += 1
    tail, rest = word[common:], base[common:]
    if rest not in ("", "e", "y"):
        return False
    if tail and common and tail[0] == word[common - 1] and rest == "":
        tail = tail[1:]
    return tail in INFLECTIONS


def _negated(tokens: list[str], start: int, end: int) -> bool:
    before = tokens[start - 1] if start else ""
    two_before = tuple(tokens[start - 2 : start]) if start >= 2 else ()
    after = tokens[end] if end < len(tokens) else ""
    # "no blood or gore": one word and "or" after the negation still lie in its scope.
    listed = before in ("or", "nor") and start >= 3 and tokens[start - 3] in NEGATIONS
    return before in NEGATIONS or two_before in NEGATIONS_TWO_WORDS or after in NEGATION_AFTER or listed


def without_exclusions(text: str, excluded: Iterable[str]) -> str:
    """``text`` with each clause-final exclusion of an ``excluded`` term cut out: "a beach match, no
    nudity" -> "a beach match,". Only where the negation and the term end a clause (a punctuation
    mark or the end follows): "no gore held back" keeps its words, so the moderator still reads it.
    """
    words = sorted({w for w in excluded if w.strip()}, key=len, reverse=True)
    if not words:
        return text
    term = "(?:" + "|".join(r"\W+".join(map(re.escape, w.split())) for w in words) + r")\w*"
    # The rules' negation scope (NEGATIONS and the rest above), written as a pattern: "no blood or
    # gore" lets one word and "or" stand between.
    before = "|".join([*sorted(NEGATIONS), *(r"\W+".join(words) for words in sorted(NEGATIONS_TWO_WORDS))])
    after = "|".join(sorted(NEGATION_AFTER))
    negation = rf"(?:{before})\W+(?:\w+\W+(?:or|nor)\W+)?{term}"
    pattern = re.compile(rf"\b(?:{negation}|{term}\W?(?:{after}))(?=\s*(?:[,.;:!?)\n]|$))", re.IGNORECASE)
    return pattern.sub("", text)


def _remembered(memo: dict[str, tuple[Any, ...]], text: str, compute: Callable[[str], list[Any]]) -> tuple[Any, ...]:
    """``compute(text)``, remembered per text; the memo is emptied when it holds MAX_TEXT_MEMO texts."""
    found = memo.get(text)
    if found is None:
        if len(memo) >= MAX_TEXT_MEMO:
            memo.clear()
        found = memo[text] = tuple(compute(text))
    return found


class TermIndex:
    """Whole-token lookup of many terms (single words or phrases) across a text's evasion variants."""

    def __init__(self, groups: Mapping[str, Iterable[str]]) -> None:
        self._by_key: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        self._by_stem: dict[str, list[tuple[str, str, tuple[str, ...]]]] = defaultdict(list)
        # First words of multi-word terms (squeezed, and stemmed): a longer n-gram is only looked up
        # when it starts with one of them.
        self._firsts: set[str] = set()
        self.max_words = 1
        for group, terms in groups.items():
            for term in terms:
                for tokens in variants(term):
                    if not tokens:
                        continue
                    self.max_words = max(self.max_words, len(tokens))
                    # Phrases are also known written as one word: "self harm" and "selfharm".
                    for form in {" ".join(tokens), "".join(tokens)}:
                        entry = (group, term, form)
                        if entry not in self._by_key[squeeze(form)]:
                            self._by_key[squeeze(form)].append(entry)
                    # Inflections of every word of the term: "undressing", "cut in halves".
                    if len(tokens) > 1:
                        self._firsts.update((squeeze(tokens[0]), stem(tokens[0])))
                    stems = " ".join(stem(t) for t in tokens)
                    if (group, term, tuple(tokens)) not in self._by_stem[stems]:
                        self._by_stem[stems].append((group, term, tuple(tokens)))
        # n-gram -> its hits, and text -> its hits: common words, captions, hashtags and negative
        # prompts recur across a catalog's rows, and a lookup is pure.
        self._memo: dict[str, tuple[TermHit, ...]] = {}
        self._texts: dict[str, tuple[TermHit, ...]] = {}
        self._occurrences: dict[str, tuple[Occurrence, ...]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def find(self, text: str) -> list[TermHit]:
        """Every term found in ``text`` (each term once), in the order first seen."""
        return list(_remembered(self._texts, text, self._find))

    def _find(self, text: str) -> list[TermHit]:
        hits: dict[tuple[str, str], TermHit] = {}
        for occurrence in self.occurrences(text):
            hit = occurrence.hit
            key = (hit.group, hit.term)
            if key not in hits or (hits[key].negated and not hit.negated):
                hits[key] = hit
        return list(hits.values())

    def occurrences(self, text: str) -> list[Occurrence]:
        """Every place a term occurs, in each evasion variant of the text, with its token span."""
        return list(_remembered(self._occurrences, text, self._occurrences_of))

    def _occurrences_of(self, text: str) -> list[Occurrence]:
        found_all: list[Occurrence] = []
        for number, tokens in enumerate(_variants(text)):
            for start in range(len(tokens)):
                first = tokens[start]
                longer = squeeze(first) in self._firsts or stem(first) in self._firsts
                for size in range(1, self.max_words + 1):
                    if start + size > len(tokens) or (size > 1 and not longer):
                        break
                    words = " ".join(tokens[start : start + size])
                    found = self._memo.get(words)
                    if found is None:
                        if len(self._memo) >= MAX_MEMO:
                            self._memo.clear()
                        found = self._memo[words] = tuple(self._lookup(words))
                    if not found:
                        continue
                    negated = _negated(tokens, start, start + size)
                    for hit in found:
                        hit = replace(hit, negated=True) if negated else hit
                        found_all.append(Occurrence(hit, number, start, start + size))
        return found_all

    def _lookup(self, words: str) -> Iterable[TermHit]:
        seen: set[tuple[str, str]] = set()
        for candidate in _singulars(words):
            for group, term, form in self._by_key.get(squeeze(candidate), ()):
                if (group, term) not in seen and _stretch_pattern(form).fullmatch(candidate):
                    seen.add((group, term))
                    yield TermHit(group, term, words)
        tokens = words.split(" ")
        for group, term, base in self._by_stem.get(" ".join(stem(t) for t in tokens), ()):
            if (group, term) not in seen and all(inflects(w, b) for w, b in zip(tokens, base, strict=True)):
                seen.add((group, term))
                yield TermHit(group, term, words)


def _singulars(words: str) -> set[str]:
    """The words and their singular: plurals and third persons ("nudes", "kisses") are the term too.

    "es" is only dropped after s, x, z, ch and sh, so "spices" never reads as "spic".
    """
    out = {words}
    if words.endswith("s") and not words.endswith("ss"):
        out.add(words[:-1])
    if re.search(r"(?:s|x|z|ch|sh)es$", words):
        out.add(words[:-2])
    return out


# --- PII -------------------------------------------------------------------------------------

# Bare domains ("shop.example.com") are URLs only with a common generic TLD; two-letter country
# codes also end ordinary words run together after a full stop ("sits.It", "end.in"), so a bare
# domain with one of those needs a path ("example.de/shop") or a scheme or "www." to count.
_GENERIC_TLDS = "com|net|org|edu|gov|io|ai|app|dev|shop|store|info|biz|xyz|online|site|link"
_COUNTRY_TLDS = "co|tv|me|ly|gg|uk|de|fr|es|it|nl|eu|us|ca|au|in|jp|cn|br|ru"
_EMAIL = re.compile(
    r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}"
    # "name at domain dot com", "name (at) domain [dot] com"
    r"|\b[a-z0-9._%+-]+\s*[\[(]\s*at\s*[\])]\s*[a-z0-9-]+(?:\s*[\[(]?\s*(?:dot|\.)\s*[\])]?\s*[a-z0-9-]+)+",
    re.IGNORECASE,
)
_URL = re.compile(
    rf"\bhttps?://[^\s<>\"']+|\bwww\.[^\s<>\"']+"
    rf"|\b(?:[a-z0-9-]+\.)+(?:{_GENERIC_TLDS})\b(?:/[^\s<>\"']*)?"
    rf"|\b(?:[a-z0-9-]+\.)+(?:{_COUNTRY_TLDS})/[^\s<>\"']*",
    re.IGNORECASE,
)
# Digits in phone-like groups; a match is kept with 9 to 15 digits, and when its groups are only
# separated by spaces (or not at all) only with a "+", "00", "0" or "(" in front: "1280 720 1080"
# and "1920 1930 1940" are numbers, "020 7946 0958" and "+1 555 123 4567" are phones.
_PHONE = re.compile(r"(?<![\w.+-])(?:\+|00)?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?![\w-])")
_STREET_TYPES = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|terrace|highway|hwy|parkway|pkwy|alley|"
    "strasse|straße|rue|calle|via"
)
_STREET_TYPES_CAPITALIZED = "Drive|Dr|Way|Place|Pl|Court|Ct|Square|Sq|Close|Crescent|Row"
_STREET_WORD = r"(?!(?:the|a|an|of|on|in|to|at|down|up|across|along|over|and|with|into|onto|from)\b)[A-Za-z][\w'.-]*"
# A house number may carry a letter ("221B"), but a decade ("1960s London street") is no number.
_ADDRESS = re.compile(
    rf"\b(?!\d{{0,3}}0s\b)\d{{1,5}}[A-Za-z]?,?\s+(?:{_STREET_WORD}\s+){{1,3}}"
    rf"(?:(?i:{_STREET_TYPES})|{_STREET_TYPES_CAPITALIZED})\b\.?",
)

PII_KINDS = ("email", "phone", "street_address", "url")


@dataclass(frozen=True)
class PiiHit:
    """Personal data found in a text: its kind and the text that matched."""

    kind: str
    matched: str


def find_pii(text: str, kinds: Iterable[str] = PII_KINDS, allowed_domains: Iterable[str] = ()) -> list[PiiHit]:
    """E-mail addresses, phone numbers, street addresses and URLs in ``text``.

    URLs and e-mail addresses on ``allowed_domains`` (or their subdomains) are allowed: a brand's
    own site in a caption is not personal data.
    """
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    allowed = tuple(d.lower().lstrip(".") for d in allowed_domains)
    kinds = set(kinds)
    hits: list[PiiHit] = []
    emails = [m.group() for m in _EMAIL.finditer(text)]
    if "email" in kinds:
        hits += [PiiHit("email", e) for e in emails if not _on_allowed_domain(e.rsplit("@", 1)[-1], allowed)]
    if "url" in kinds:
        for m in _URL.finditer(text):
            url = m.group().rstrip(".,;:!?)")
            if any(url in e for e in emails):
                continue
            host = re.sub(r"^(?:https?://)?", "", url, flags=re.IGNORECASE).split("/")[0].split(":")[0]
            if not _on_allowed_domain(host, allowed):
                hits.append(PiiHit("url", url))
    if "phone" in kinds:
        for m in _PHONE.finditer(text):
            number = m.group().strip()
            digits = re.sub(r"\D", "", number)
            marked = number[0] in "+0(" or re.search(r"[.()-]", number)
            if 9 <= len(digits) <= 15 and marked:
                hits.append(PiiHit("phone", m.group().strip()))
    if "street_address" in kinds:
        hits += [PiiHit("street_address", m.group()) for m in _ADDRESS.finditer(text)]
    return hits


def _on_allowed_domain(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in allowed)
