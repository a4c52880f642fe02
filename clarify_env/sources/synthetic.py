"""Procedurally generated open-book tasks about invented people, titles, towns and teams.

Every task is built from one 63-bit task seed (``id = "syn-{seed}"``), so it can be
rebuilt from its id. Names are made of syllables, so no pretrained model knows the
answers; within a task every invented word is used once, which keeps the answers of
different interpretations token-disjoint (token F1 between them is 0) and keeps answer
words out of facets and queries. Kinds of ambiguity (``KINDS``):

- ``year``: versions of a series, film or cup from different years ("1987 series");
- ``medium``: a novel, film, stage musical... sharing one title ("video game");
- ``place``: towns of one name in different countries ("Norway");
- ``role``: characters of a play or show ("Dr. Quell");
- ``sport``: a city's teams in different sports ("basketball");
- ``category``: categories of a prize ("poetry");
- ``person``: namesakes told apart by profession ("painter").

Priors are integer percentages (each >= 5, summing to 100, with a unique largest) drawn
from a Dirichlet whose concentration is itself drawn, so the likeliest meaning's share
ranges from near-uniform to ~90%. Tasks are built with ``random.Random(seed)`` rather
than a numpy generator: seeding it and drawing scalars is several times cheaper.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from clarify_env.context import render_context
from clarify_env.matching import STOPWORDS
from clarify_env.tasks import Interpretation, Task

SEED_SPACE = 2**63
MIN_PRIOR = 5
MAX_INTERPRETATIONS = 6
CONCENTRATIONS = (0.3, 0.6, 1.0, 2.0, 5.0, 30.0)

# Syllables: a word starts with a capitalised one (any onset) and goes on with lower-case
# ones (single-consonant onsets), e.g. "Va" + "ro", "Mel" + "kin", "Zor" + "vath".
_ONSETS = "b d f g k l m n p r s t v z br dr gr kr st tr th sh".split()
_MID_ONSETS = "b d f g k l m n p r s t v z th".split()
_OPEN_CAP = tuple(f"{o}{v}".capitalize() for o in _ONSETS for v in "aeiou")
_CLOSED_CAP = tuple(f"{o}{v}{c}".capitalize() for o in _ONSETS for v in "aeiou" for c in "nrlsm")
_OPEN = tuple(f"{o}{v}" for o in _MID_ONSETS for v in "aeiou")
_CLOSED = tuple(f"{o}{v}{c}" for o in _MID_ONSETS for v in "aeiou" for c in ("n", "r", "l", "s", "k", "th"))

_MONTHS = ("January February March April May June July August September October November December").split()
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TOWN_PREFIXES = ("Port", "Upper", "Lake", "North", "Saint", "Fort")
_ROLE_PREFIXES = ("Dr.", "Captain", "Lady", "Professor", "Sister", "Agent", "Uncle", "Old")
_ROLES = (
    "the Beast",
    "the Captain",
    "the Narrator",
    "the Doctor",
    "the Queen",
    "the Ghost",
    "the Detective",
    "the King",
)
_MEDIA = (
    ("novel", "wrote the novel"),
    ("film", "directed the film"),
    ("stage musical", "composed the stage musical"),
    ("video game", "designed the video game"),
    ("TV series", "created the TV series"),
    ("comic book", "drew the comic book"),
    ("album", "recorded the album"),
    ("radio drama", "produced the radio drama"),
)
_COUNTRIES = (
    "Norway",
    "Chile",
    "Canada",
    "Australia",
    "Scotland",
    "Kenya",
    "Brazil",
    "Ontario",
    "Texas",
    "Bavaria",
    "Japan",
    "Peru",
    "Poland",
    "New Zealand",
    "South Africa",
    "Ireland",
)
_SPORTS = ("football", "basketball", "hockey", "baseball", "rugby", "cricket", "volleyball", "handball")
_CATEGORIES = ("fiction", "poetry", "drama", "biography", "history", "translation", "science writing", "journalism")
_OCCUPATIONS = ("painter", "footballer", "senator", "composer", "chemist", "novelist", "architect", "cyclist")
_NOTES = (
    "Note: {t} is often confused with {w}.",
    "Archive entry {n} on {t} was last revised in {y}.",
    "(Unrelated: {w} opened a museum in {y}.)",
)

Value = Mapping[str, str]
Answer = Callable[[random.Random, set], tuple[str, ...]]


def _pick(r: random.Random, seq: Sequence[str]) -> str:
    return seq[int(r.random() * len(seq))]


def _randint(r: random.Random, low: int, high: int) -> int:
    """Uniform integer in [low, high]; cheaper than ``Random.randint``."""
    return low + int(r.random() * (high - low + 1))


def _claim(used: set, *tokens: str) -> bool:
    """Reserve normalised ``tokens`` for this task; False (reserving none) if one is taken."""
    if any(t in used for t in tokens):
        return False
    used.update(tokens)
    return True


def _word(r: random.Random, used: set, *tables: Sequence[str]) -> str:
    """A fresh invented word (one syllable group from each table): not yet used in this
    task and not a word of any template or vocabulary list."""
    rnd = r.random
    while True:
        w = "".join([t[int(rnd() * len(t))] for t in tables])
        low = w.lower()
        if low not in used and low not in _RESERVED:
            used.add(low)
            return w


def _number(r: random.Random, used: set, low: int, high: int) -> int:
    while True:
        n = _randint(r, low, high)
        if (token := str(n)) not in used:
            used.add(token)
            return n


# -- answers: each returns the gold answer and its aliases ---------------------------------


def _person(r: random.Random, used: set) -> tuple[str, ...]:
    family = _word(r, used, _CLOSED_CAP, _CLOSED) if r.random() < 0.5 else _word(r, used, _OPEN_CAP, _CLOSED)
    u = r.random()
    if u < 0.15:
        return (family,)
    given = _word(r, used, _OPEN_CAP, _OPEN)
    if u < 0.8:
        return (f"{given} {family}", family)
    middle = _word(r, used, _CLOSED_CAP)
    return (f"{given} {middle} {family}", f"{given} {family}")


def _year(r: random.Random, used: set) -> tuple[str, ...]:
    return (str(_number(r, used, 1900, 2023)),)


def _date(r: random.Random, used: set) -> tuple[str, ...]:
    year = str(_number(r, used, 1900, 2005))
    if r.random() < 0.3:
        return (year,)
    while not _claim(used, (month := _pick(r, _MONTHS)).lower()):
        pass
    if r.random() < 0.4:
        return (f"{month} {year}",)
    day = _number(r, used, 1, 28)
    return (f"{day} {month} {year}", f"{month} {day}, {year}")


def _population(r: random.Random, used: set) -> tuple[str, ...]:
    n = _number(r, used, 12, 9500) * 100
    return (f"{n:,}", str(n))


def _count(r: random.Random, used: set) -> tuple[str, ...]:
    while not _claim(used, str(n := _randint(r, 2, 19)), _NUMBER_WORDS[n]):
        pass
    return (str(n), _NUMBER_WORDS[n])


def _town(r: random.Random, used: set) -> tuple[str, ...]:
    town = _place_name(r, used)
    if r.random() < 0.6 or not _claim(used, (prefix := _pick(r, _TOWN_PREFIXES)).lower()):
        return (town,)
    return (f"{prefix} {town}", town)


def _book(r: random.Random, used: set) -> tuple[str, ...]:
    return (" ".join(_word(r, used, _CLOSED_CAP, _OPEN) for _ in range(_randint(r, 1, 3))),)


# -- facet values: k distinct, each a mapping of template fields ---------------------------


def _years(r: random.Random, k: int, used: set) -> list[Value]:
    return [{"year": str(_number(r, used, 1950, 2023))} for _ in range(k)]


def _from_pool(pool: Sequence[str], field: str) -> Callable[[random.Random, int, set], list[Value]]:
    return lambda r, k, used: [{field: v} for v in r.sample(pool, k)]


def _media(r: random.Random, k: int, used: set) -> list[Value]:
    return [{"label": label, "verb": verb} for label, verb in r.sample(_MEDIA, k)]


def _characters(r: random.Random, k: int, used: set) -> list[Value]:
    out = []
    for _ in range(k):
        name = _word(r, used, _CLOSED_CAP, _CLOSED)
        u = r.random()
        if u < 0.5:
            name = f"{_pick(r, _ROLE_PREFIXES)} {name}"
        elif u < 0.8:
            name = f"{_word(r, used, _OPEN_CAP, _OPEN)} {name}"
        out.append({"char": name})
    return out


@dataclass(frozen=True)
class _Template:
    query: str
    question: str
    facet: str
    answer: Answer


@dataclass(frozen=True)
class _Kind:
    dimension: str
    dimension_words: tuple[str, ...]
    entity: Callable[[random.Random, set], str]
    values: Callable[[random.Random, int, set], list[Value]]
    templates: tuple[_Template, ...]


def _title(r: random.Random, used: set) -> str:
    return _word(r, used, _CLOSED_CAP, _CLOSED)


def _place_name(r: random.Random, used: set) -> str:
    return _word(r, used, _OPEN_CAP, _OPEN, _CLOSED)


def _full_name(r: random.Random, used: set) -> str:
    return f"{_word(r, used, _OPEN_CAP, _OPEN)} {_word(r, used, _CLOSED_CAP, _CLOSED)}"


T = _Template
KINDS: dict[str, _Kind] = {
    "year": _Kind(
        "year",
        ("year", "version", "when", "original", "remake", "series", "edition", "older", "newer"),
        _title,
        _years,
        (
            T(
                "Who played {role} in the {t} TV series?",
                "Who played {role} in the {year} {t} TV series?",
                "{year} series",
                _person,
            ),
            T("Who directed the film {t}?", "Who directed the {year} film {t}?", "{year} film", _person),
            T("Who won the {t} Cup?", "Who won the {year} edition of the {t} Cup?", "{year} edition", _person),
        ),
    ),
    "medium": _Kind(
        "medium",
        ("book", "novel", "film", "movie", "musical", "game", "version", "medium", "adaptation", "format"),
        _title,
        _media,
        (
            T("Who created {t}?", "Who {verb} {t}?", "{label}", _person),
            T("When was {t} first released?", "When was the {label} {t} first released?", "{label}", _date),
        ),
    ),
    "place": _Kind(
        "place",
        ("where", "country", "region", "state", "place", "located", "town", "city"),
        _place_name,
        _from_pool(_COUNTRIES, "place"),
        (
            T("What is the population of {t}?", "What is the population of {t} in {place}?", "{place}", _population),
            T("Who is the mayor of {t}?", "Who is the mayor of {t} in {place}?", "{place}", _person),
            T("When was {t} founded?", "When was {t} in {place} founded?", "{place}", _year),
        ),
    ),
    "role": _Kind(
        "role",
        ("character", "role", "part", "who", "played", "plays", "playing"),
        _title,
        _characters,
        (
            T("Who starred in the play {t}?", "Who played {char} in the play {t}?", "{char}", _person),
            T(
                "Who did the voices in the animated film {t}?",
                "Who voiced {char} in the animated film {t}?",
                "{char}",
                _person,
            ),
            T("Who plays in the {t} TV series?", "Who plays {char} in the {t} TV series?", "{char}", _person),
        ),
    ),
    "sport": _Kind(
        "sport",
        ("sport", "team", "league", "club", "football", "basketball", "hockey", "baseball"),
        _place_name,
        _from_pool(_SPORTS, "sport"),
        (
            T(
                "When did {t} last win the national championship?",
                "When did the {t} {sport} team last win the national championship?",
                "{sport}",
                _year,
            ),
            T(
                "Who is the head coach of the {t} team?",
                "Who is the head coach of the {t} {sport} team?",
                "{sport}",
                _person,
            ),
            T("How many league titles has {t} won?", "How many {sport} league titles has {t} won?", "{sport}", _count),
        ),
    ),
    "category": _Kind(
        "category",
        ("category", "award", "prize", "kind", "type", "genre", "division"),
        _title,
        _from_pool(_CATEGORIES, "cat"),
        (
            T("Who won the {t} Prize in {when}?", "Who won the {t} Prize for {cat} in {when}?", "{cat}", _person),
            T(
                "Which book won the {t} Prize in {when}?",
                "Which book won the {t} Prize for {cat} in {when}?",
                "{cat}",
                _book,
            ),
        ),
    ),
    "person": _Kind(
        "person",
        ("person", "profession", "occupation", "job", "known", "famous", "work"),
        _full_name,
        _from_pool(_OCCUPATIONS, "occ"),
        (
            T("When was {t} born?", "When was {t} the {occ} born?", "{occ}", _date),
            T("Where was {t} born?", "Where was {t} the {occ} born?", "{occ}", _town),
        ),
    ),
}
del T

_FIXED_TEXT = [t.query + " " + t.question for k in KINDS.values() for t in k.templates] + [
    *_NOTES,
    *_MONTHS,
    *_NUMBER_WORDS,
    *_TOWN_PREFIXES,
    *_ROLE_PREFIXES,
    *_ROLES,
    *_COUNTRIES,
    *_SPORTS,
    *_CATEGORIES,
    *_OCCUPATIONS,
    *(" ".join(m) for m in _MEDIA),
]
_RESERVED = frozenset(STOPWORDS) | {
    w for text in _FIXED_TEXT for w in re.sub(r"\{\w+\}|[^\w\s]", " ", text.lower()).split()
}


def _priors(r: random.Random, k: int) -> list[int]:
    """Integer percentages, each >= MIN_PRIOR, summing to 100, with a unique largest."""
    if k == 1:
        return [100]
    concentration = _pick(r, CONCENTRATIONS)
    weights = [r.gammavariate(concentration, 1.0) for _ in range(k)]
    total = sum(weights) or 1.0
    spare = 100 - MIN_PRIOR * k
    raw = [spare * w / total for w in weights]
    shares = [int(x) for x in raw]
    for i in sorted(range(k), key=lambda i: shares[i] - raw[i])[: spare - sum(shares)]:
        shares[i] += 1
    order = sorted(range(k), key=shares.__getitem__, reverse=True)
    if shares[order[0]] == shares[order[1]]:
        shares[order[0]] += 1
        shares[order[1]] -= 1
    return [MIN_PRIOR + s for s in shares]


class SyntheticSource:
    """An endless, seedable source of synthetic open-book tasks (see the module docstring).

    ``ambiguous_fraction`` of the tasks have ``min_interpretations``..``max_interpretations``
    meanings (uniformly); the rest have one, and their query names its facet. ``kinds``
    restricts the ambiguity kinds (default: all of ``KINDS``); ``max_notes`` distractor
    lines (0 to that many, in a non-canonical format) follow the context;
    ``seed_offset`` is added to every drawn task seed (mod 2**63), so sources with
    different offsets draw different tasks from the same generator states. A task is
    rebuilt from its id by a source with the same settings.
    """

    name = "synthetic"

    def __init__(
        self,
        seed_offset: int = 0,
        ambiguous_fraction: float = 0.8,
        min_interpretations: int = 2,
        max_interpretations: int = 4,
        kinds: Sequence[str] | None = None,
        max_notes: int = 2,
    ) -> None:
        if not 0.0 <= ambiguous_fraction <= 1.0:
            raise ValueError(f"ambiguous_fraction must be in [0, 1], got {ambiguous_fraction!r}")
        if not 2 <= min_interpretations <= max_interpretations <= MAX_INTERPRETATIONS:
            raise ValueError(
                f"need 2 <= min_interpretations <= max_interpretations <= {MAX_INTERPRETATIONS}, "
                f"got {min_interpretations} and {max_interpretations}"
            )
        if isinstance(kinds, str):
            kinds = [kinds]
        kinds = tuple(KINDS) if kinds is None else tuple(kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"unknown synthetic kinds {unknown} (known: {', '.join(KINDS)})")
        if max_notes < 0:
            raise ValueError(f"max_notes must be >= 0, got {max_notes}")
        self.seed_offset = int(seed_offset) % SEED_SPACE
        self.ambiguous_fraction = ambiguous_fraction
        self.min_interpretations = min_interpretations
        self.max_interpretations = max_interpretations
        self.kinds = kinds
        self.max_notes = max_notes

    def sample(self, rng: np.random.Generator) -> Task:
        """Draw one task seed from ``rng`` and build its task."""
        return self.task((int(rng.integers(SEED_SPACE)) + self.seed_offset) % SEED_SPACE)

    def from_id(self, task_id: str) -> Task:
        """Rebuild the task whose id is ``task_id`` (``"syn-{seed}"``)."""
        prefix, _, seed = task_id.partition("-")
        if prefix != "syn" or not seed.isdigit():
            raise ValueError(f"not a synthetic task id: {task_id!r}")
        return self.task(int(seed))

    def task(self, task_seed: int) -> Task:
        """The task built from ``task_seed`` (0 <= seed < 2**63)."""
        if not 0 <= task_seed < SEED_SPACE:
            raise ValueError(f"task seed must be in [0, 2**63), got {task_seed}")
        r = random.Random(task_seed)
        ambiguous = r.random() < self.ambiguous_fraction
        kind_name = _pick(r, self.kinds)
        kind = KINDS[kind_name]
        template = kind.templates[int(r.random() * len(kind.templates))]
        k = _randint(r, self.min_interpretations, self.max_interpretations) if ambiguous else 1
        used: set = set()
        entity = kind.entity(r, used)
        fields = {"t": entity, "role": _pick(r, _ROLES), "when": str(_number(r, used, 1960, 2023))}
        interps = tuple(
            Interpretation(
                question=template.question.format(**fields, **value),
                answers=template.answer(r, used),
                prior=float(prior),
                facet=template.facet.format(**value),
            )
            for value, prior in zip(kind.values(r, k, used), _priors(r, k))
        )
        query = template.query.format(**fields) if ambiguous else interps[0].question
        return Task(
            id=f"syn-{task_seed}",
            query=query,
            interpretations=interps,
            context=render_context(interps, self._notes(r, entity, used)),
            dimension=kind.dimension,
            metadata={"kind": kind_name, "dimension_words": list(kind.dimension_words)},
        )

    def _notes(self, r: random.Random, entity: str, used: set) -> list[str]:
        """0..max_notes distractor lines that are not in the canonical context format."""
        return [
            _pick(r, _NOTES).format(
                t=entity,
                w=_word(r, used, _CLOSED_CAP, _OPEN),
                y=_number(r, used, 1900, 2023),
                n=_number(r, used, 100, 999),
            )
            for _ in range(_randint(r, 0, self.max_notes))
        ]
