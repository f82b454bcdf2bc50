"""A small built-in English grammar: seeded, varied sentences for the generated speech world.

No corpus can be downloaded, so the world speaks from this grammar. Templates cover statements, questions,
commands, numbers (times, prices, years, phone digits) and names; each sentence is about 5-16 words, which
espeak-ng speaks in roughly 1.5-5 seconds. All choices come from the caller's ``np.random.Generator``, so the
same seed gives the same sentences. The vocabulary was written for fedpse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# --- vocabulary -------------------------------------------------------------------------------------------------

NAMES = (
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kate", "Leo", "Maya",
    "Nina", "Oscar", "Paula", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Walter", "Yusuf", "Zoe", "Amir",
    "Bella", "Carlos", "Daniel", "Emma", "Frank", "Hannah", "Ivan", "Julia", "Kevin", "Laura", "Martin", "Nora",
    "Peter", "Ruth", "Simon", "Tom", "Lucy", "Mark", "Sofia", "Henry", "Alice", "George", "Priya", "Kenji",
)  # fmt: skip

# (singular, plural) for countable things people talk about
THINGS = (
    ("book", "books"), ("letter", "letters"), ("key", "keys"), ("bag", "bags"), ("box", "boxes"),
    ("chair", "chairs"), ("table", "tables"), ("lamp", "lamps"), ("phone", "phones"), ("ticket", "tickets"),
    ("bottle", "bottles"), ("cup", "cups"), ("plate", "plates"), ("knife", "knives"), ("window", "windows"),
    ("door", "doors"), ("map", "maps"), ("coat", "coats"), ("shoe", "shoes"), ("hat", "hats"),
    ("bicycle", "bicycles"), ("car", "cars"), ("train", "trains"), ("boat", "boats"), ("camera", "cameras"),
    ("picture", "pictures"), ("blanket", "blankets"), ("pencil", "pencils"), ("notebook", "notebooks"),
    ("envelope", "envelopes"), ("umbrella", "umbrellas"), ("basket", "baskets"), ("candle", "candles"),
    ("clock", "clocks"), ("mirror", "mirrors"), ("radio", "radios"), ("guitar", "guitars"), ("piano", "pianos"),
    ("jacket", "jackets"), ("wallet", "wallets"), ("ladder", "ladders"), ("bucket", "buckets"),
    ("hammer", "hammers"), ("bridge", "bridges"), ("parcel", "parcels"), ("report", "reports"),
    ("message", "messages"), ("recipe", "recipes"), ("sandwich", "sandwiches"), ("apple", "apples"),
    ("orange", "oranges"), ("lemon", "lemons"), ("tomato", "tomatoes"), ("potato", "potatoes"),
    ("carrot", "carrots"), ("egg", "eggs"), ("cake", "cakes"), ("cookie", "cookies"), ("flower", "flowers"),
    ("tree", "trees"), ("stone", "stones"), ("shell", "shells"), ("feather", "feathers"), ("puzzle", "puzzles"),
    ("dog", "dogs"), ("cat", "cats"), ("horse", "horses"), ("rabbit", "rabbits"), ("bird", "birds"),
    ("fish", "fish"), ("sheep", "sheep"), ("goose", "geese"), ("mouse", "mice"), ("child", "children"),
    ("neighbour", "neighbours"), ("teacher", "teachers"), ("doctor", "doctors"), ("driver", "drivers"),
    ("student", "students"), ("farmer", "farmers"), ("painter", "painters"), ("baker", "bakers"),
)  # fmt: skip

PLACES = (
    "kitchen", "garden", "station", "library", "market", "office", "harbour", "museum", "bakery", "school",
    "hospital", "airport", "park", "beach", "village", "forest", "river", "mountain", "garage", "cinema",
    "hotel", "bank", "post office", "shop", "farm", "bridge", "square", "church", "theatre", "stadium",
    "corner", "hallway", "attic", "cellar", "island", "valley",
)  # fmt: skip

ADJECTIVES = (
    "old", "new", "small", "large", "red", "blue", "green", "yellow", "brown", "black", "white", "heavy",
    "light", "bright", "dark", "quiet", "noisy", "warm", "cold", "wet", "dry", "clean", "dirty", "broken",
    "empty", "full", "round", "square", "soft", "hard", "strange", "famous", "lucky", "tiny", "huge", "shiny",
    "wooden", "plastic", "golden", "silver", "striped", "spotted", "fresh", "ripe", "sweet", "sour",
    "funny", "careful", "sleepy", "busy", "friendly", "lonely", "expensive", "cheap", "simple", "delicate",
)  # fmt: skip

# (base, past, third person singular)
VERBS = (
    ("open", "opened", "opens"), ("close", "closed", "closes"), ("carry", "carried", "carries"),
    ("find", "found", "finds"), ("lose", "lost", "loses"), ("buy", "bought", "buys"), ("sell", "sold", "sells"),
    ("paint", "painted", "paints"), ("clean", "cleaned", "cleans"), ("fix", "fixed", "fixes"),
    ("move", "moved", "moves"), ("wash", "washed", "washes"), ("bring", "brought", "brings"),
    ("send", "sent", "sends"), ("take", "took", "takes"), ("hide", "hid", "hides"), ("keep", "kept", "keeps"),
    ("borrow", "borrowed", "borrows"), ("drop", "dropped", "drops"), ("count", "counted", "counts"),
    ("check", "checked", "checks"), ("pack", "packed", "packs"), ("watch", "watched", "watches"),
    ("follow", "followed", "follows"), ("push", "pushed", "pushes"), ("pull", "pulled", "pulls"),
    ("lift", "lifted", "lifts"), ("fold", "folded", "folds"), ("cut", "cut", "cuts"), ("draw", "drew", "draws"),
    ("build", "built", "builds"), ("catch", "caught", "catches"), ("throw", "threw", "throws"),
    ("leave", "left", "leaves"), ("return", "returned", "returns"), ("share", "shared", "shares"),
    ("repair", "repaired", "repairs"), ("deliver", "delivered", "delivers"), ("order", "ordered", "orders"),
    ("choose", "chose", "chooses"), ("measure", "measured", "measures"), ("weigh", "weighed", "weighs"),
    ("photograph", "photographed", "photographs"), ("describe", "described", "describes"),
    ("forget", "forgot", "forgets"), ("remember", "remembered", "remembers"), ("sort", "sorted", "sorts"),
)  # fmt: skip

ADVERBS = (
    "quickly", "slowly", "carefully", "quietly", "happily", "suddenly", "finally", "gently", "early", "late",
    "again", "together", "already", "almost", "honestly", "politely", "proudly", "secretly", "calmly",
)  # fmt: skip

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
TIMES = (
    "this morning", "last night", "yesterday", "tomorrow", "next week", "after lunch", "before dinner",
    "on the weekend", "at noon", "every evening", "in the afternoon", "later today", "last summer",
)  # fmt: skip
WEATHER = ("raining", "snowing", "sunny", "windy", "cloudy", "foggy", "freezing", "warm")
FEELINGS = (
    "happy",
    "tired",
    "surprised",
    "worried",
    "excited",
    "hungry",
    "nervous",
    "proud",
    "bored",
    "calm",
)
CONNECTIVES = ("but", "so", "because", "and", "although", "while")

# --- helpers ----------------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _noun_phrase(rng: np.random.Generator, definite: bool | None = None) -> str:
    """'the red box', 'a heavy umbrella', 'my lamp' ..."""
    noun = _pick(rng, THINGS)[0]
    adjective = _pick(rng, ADJECTIVES) if rng.random() < 0.6 else ""
    words = f"{adjective} {noun}".strip()
    if definite is None:
        definite = rng.random() < 0.6
    if definite:
        determiner = _pick(rng, ("the", "the", "the", "my", "your", "our", "this", "that"))
    else:
        determiner = _article(words)
    return f"{determiner} {words}"


def _place(rng: np.random.Generator) -> str:
    return f"{_pick(rng, ('in', 'near', 'behind', 'at', 'outside'))} the {_pick(rng, PLACES)}"


def _clock_time(rng: np.random.Generator) -> str:
    hour = int(rng.integers(1, 13))
    minute = _pick(rng, ("00", "15", "30", "45", "10", "20", "05", "50"))
    return f"{hour}:{minute}" if minute != "00" else f"{hour} o'clock"


def _price(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return f"{int(rng.integers(2, 100))} dollars"
    return f"{int(rng.integers(1, 50))} dollars and {int(rng.integers(1, 100))} cents"


# --- templates --------------------------------------------------------------------------------------------------


def _statement(rng: np.random.Generator) -> str:
    name, verb = _pick(rng, NAMES), _pick(rng, VERBS)
    forms = (
        lambda: f"{name} {verb[1]} {_noun_phrase(rng)} {_place(rng)}",
        lambda: f"{name} {verb[1]} {_noun_phrase(rng)} {_pick(rng, ADVERBS)}",
        lambda: f"{_noun_phrase(rng, True).capitalize()} is {_pick(rng, ADJECTIVES)} {_pick(rng, TIMES)}",
        lambda: f"We {verb[1]} {_noun_phrase(rng)} {_pick(rng, TIMES)}",
        lambda: f"My {_pick(rng, THINGS)[0]} {verb[2]} everything {_pick(rng, ADVERBS)}",
        lambda: f"It was {_pick(rng, WEATHER)} when {name} {verb[1]} {_noun_phrase(rng)}",
        lambda: f"{name} felt {_pick(rng, FEELINGS)} {_place(rng)} {_pick(rng, TIMES)}",
        lambda: (
            f"There are {_pick(rng, ('two', 'three', 'four', 'five', 'many', 'no'))} "
            f"{_pick(rng, THINGS)[1]} {_place(rng)}"
        ),
    )
    return _pick(rng, forms)() + "."


def _question(rng: np.random.Generator) -> str:
    name, verb, things = _pick(rng, NAMES), _pick(rng, VERBS), _pick(rng, THINGS)
    forms = (
        lambda: f"Did you {verb[0]} {_noun_phrase(rng)} {_pick(rng, TIMES)}",
        lambda: f"Where did {name} {verb[0]} {_noun_phrase(rng, True)}",
        lambda: f"How many {things[1]} are {_place(rng)}",
        lambda: f"Why is {_noun_phrase(rng, True)} so {_pick(rng, ADJECTIVES)}",
        lambda: f"Can you {verb[0]} {_noun_phrase(rng)} for {name}",
        lambda: f"Is it {_pick(rng, WEATHER)} {_place(rng)} {_pick(rng, TIMES)}",
        lambda: f"Who {verb[1]} {_noun_phrase(rng, True)} {_place(rng)}",
        lambda: f"Would you like {_article(things[0])} {things[0]} or {_noun_phrase(rng, False)}",
    )
    return _pick(rng, forms)() + "?"


def _command(rng: np.random.Generator) -> str:
    verb = _pick(rng, VERBS)
    forms = (
        lambda: f"Please {verb[0]} {_noun_phrase(rng, True)} before {_pick(rng, DAYS)}",
        lambda: f"Don't forget to {verb[0]} {_noun_phrase(rng, True)} {_pick(rng, TIMES)}",
        lambda: f"{verb[0].capitalize()} {_noun_phrase(rng, True)} {_pick(rng, ADVERBS)}, please",
        lambda: f"Let's {verb[0]} {_noun_phrase(rng)} {_place(rng)}",
        lambda: f"Ask {_pick(rng, NAMES)} to {verb[0]} {_noun_phrase(rng, True)}",
        lambda: f"Never {verb[0]} {_noun_phrase(rng, True)} without asking {_pick(rng, NAMES)}",
    )
    return _pick(rng, forms)() + _pick(rng, (".", ".", "!"))


def _numbers(rng: np.random.Generator) -> str:
    name, things = _pick(rng, NAMES), _pick(rng, THINGS)
    forms = (
        lambda: (
            f"The {_pick(rng, ('meeting', 'train', 'concert', 'class', 'bus'))} leaves at {_clock_time(rng)} "
            f"on {_pick(rng, DAYS)}."
        ),
        lambda: f"{name} paid {_price(rng)} for {int(rng.integers(2, 13))} {things[1]}.",
        lambda: f"The {_pick(rng, PLACES)} opened in {int(rng.integers(1890, 2024))}.",
        lambda: (
            f"Room {int(rng.integers(100, 999))} is on the {_pick(rng, ('first', 'second', 'third', 'fifth'))}"
            " floor."
        ),
        lambda: (
            f"Call {name} at {' '.join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(5, 8))))}."
        ),
        lambda: f"We counted {int(rng.integers(11, 2000))} {things[1]} {_place(rng)}.",
        lambda: (
            f"Is the {_pick(rng, MONTHS)} {int(rng.integers(1, 29))} appointment still at {_clock_time(rng)}?"
        ),
        lambda: f"About {int(rng.integers(2, 99))} percent of the {things[1]} were {_pick(rng, ADJECTIVES)}.",
    )
    return _pick(rng, forms)()


def _names(rng: np.random.Generator) -> str:
    first, second = (str(x) for x in rng.choice(NAMES, size=2, replace=False))
    verb = _pick(rng, VERBS)
    forms = (
        lambda: f"{first} and {second} went to the {_pick(rng, PLACES)} on {_pick(rng, DAYS)}.",
        lambda: f"{first} told {second} about {_noun_phrase(rng, False)}.",
        lambda: f"Has {first} met {second} {_place(rng)}?",
        lambda: f"{first}, could you help {second} {verb[0]} {_noun_phrase(rng, True)}?",
        lambda: f"{second} thinks {first} {verb[1]} {_noun_phrase(rng, True)} {_pick(rng, TIMES)}.",
    )
    return _pick(rng, forms)()


def _compound(rng: np.random.Generator) -> str:
    """Two short clauses joined by a connective: the longer (4-5 s) sentences."""
    name, verb, verb2 = _pick(rng, NAMES), _pick(rng, VERBS), _pick(rng, VERBS)
    first = f"{name} {verb[1]} {_noun_phrase(rng)}"
    second = f"{_pick(rng, ('we', 'they', 'she', 'he', 'I'))} {verb2[1]} {_noun_phrase(rng)} {_place(rng)}"
    return f"{first}, {_pick(rng, CONNECTIVES)} {second}."


TEMPLATES: tuple[tuple[str, Callable[[np.random.Generator], str], float], ...] = (
    ("statement", _statement, 0.28),
    ("question", _question, 0.18),
    ("command", _command, 0.14),
    ("numbers", _numbers, 0.16),
    ("names", _names, 0.12),
    ("compound", _compound, 0.12),
)


def vocabulary() -> set[str]:
    """Every word the grammar can draw from its word lists (numbers aside): for tests and documentation."""
    words: set[str] = set()
    for group in (NAMES, PLACES, ADJECTIVES, ADVERBS, DAYS, MONTHS, WEATHER, FEELINGS, CONNECTIVES, TIMES):
        for item in group:
            words.update(item.lower().split())
    for pair in THINGS + VERBS:
        words.update(w.lower() for w in pair)
    return words


def sentence(rng: np.random.Generator) -> str:
    """One English sentence (statement, question, command, numbers, names or two-clause), seeded by ``rng``."""
    weights = np.array([w for _, _, w in TEMPLATES])
    index = int(rng.choice(len(TEMPLATES), p=weights / weights.sum()))
    return TEMPLATES[index][1](rng)


def sentences(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` sentences drawn from ``rng`` (duplicates are possible but rare)."""
    return [sentence(rng) for _ in range(n)]
