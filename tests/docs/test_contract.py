"""docs/contract.md never drops what the shared contract names, and agrees with the code.

The normative contract is ``shared/CONTRACT.md``, which CI places beside the
clone (``<repo>/../shared``). docs/contract.md carries it in the repo: it may
add topics, fields or dead-letter reasons, never drop one. Its dead-letter
reasons and feature names must also be exactly the code's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import product
from pathlib import Path
from typing import get_args

import pytest

from operators.card_features import CARD_FEATURES
from operators.columns import MERCHANT_FEATURES, TXN_FEATURES
from schemas.records import WIRE_MODELS, DeadLetterReason

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "contract.md"
SHARED = REPO.parent / "shared" / "CONTRACT.md"

_CODE = re.compile(r"`([^`\n]+)`")
_JSON_BLOCK = re.compile(r"```json\n(.*?)```", re.DOTALL)
_JSON_KEY = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:')
_FEATURE = re.compile(r"(?:card|merchant|txn)_[a-z0-9_]+(?:\{[a-z0-9,]+\})?")


def _words(text: str) -> str:
    """The text with every run of whitespace made one space."""
    return " ".join(text.split())


def _expand(name: str) -> list[str]:
    """``card_count_{1m,5m}`` -> ``card_count_1m``, ``card_count_5m``."""
    parts = re.split(r"\{([^}]*)\}", name)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in product(*choices)]


def topics(text: str) -> set[str]:
    """Topic names in the first column of the ``## Topics`` table."""
    section = text.split("## Topics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {_CODE.findall(row)[0] for row in rows}


def schema_fields(text: str) -> set[str]:
    """Field names of every schema: the JSON examples' keys and the aggregates' field list."""
    found = {k for block in _JSON_BLOCK.findall(text) for k in _JSON_KEY.findall(block)}
    found.discard("...")
    aggregates = re.search(r"go to `window-aggregates`:(.*?)\.\n", text, re.DOTALL)
    assert aggregates is not None, "no window-aggregates field list"
    return found | set(_CODE.findall(aggregates.group(1)))


def feature_names(text: str) -> set[str]:
    """Every feature the text names in code spans (brace lists expanded)."""
    wire_fields = {f for model in WIRE_MODELS.values() for f in model.model_fields}
    names: set[str] = set()
    for span in _CODE.findall(text):
        for match in _FEATURE.finditer(span):
            if match.group(0) == span or span.startswith("max("):
                names.update(_expand(match.group(0)))
    return names - wire_fields


def dead_letter_reasons(text: str) -> set[str]:
    """The reasons in the sentence "`reason` is one of ..."."""
    match = re.search(r"`reason` is one of (.*?)\.", _words(text))
    assert match is not None, "no dead-letter reason list"
    return set(_CODE.findall(match.group(1)))


def defaults(text: str) -> set[str]:
    """Each default the text names, as the phrase that states it.

    "(default 5 s)" gives "default 5 s"; the session gap, the tumbling length
    and the duplicate horizon are stated in place ("gap 30 min", "Tumbling (5
    min", "last 24 h").
    """
    words = _words(text)
    found = {f"default {v}" for v in re.findall(r"\(default ((?:more than )?\d[^)]*)\)", words)}
    for pattern in (r"gap \d+ \w+", r"Tumbling \(\d+ \w+", r"last \d+ h"):
        found.update(re.findall(pattern, words))
    return found


@pytest.fixture(scope="module")
def shared() -> str:
    if not SHARED.is_file():
        pytest.skip(f"no shared contract at {SHARED} (CI puts shared/ beside the clone)")
    return SHARED.read_text()


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text()


def test_the_parsers_find_what_the_shared_contract_names(shared: str) -> None:
    # Guards the checks below against passing because a parser found nothing.
    assert topics(shared) >= {"transactions", "scores", "dead-letters"}
    assert {"event_id", "txn_event_id", "processed_at", "payload_encoding", "chargeback_rate"} <= (
        schema_fields(shared)
    )
    assert len(feature_names(shared)) == 15  # 13 card, 2 merchant
    assert dead_letter_reasons(shared) >= {"json", "duplicate"}
    assert {"default 5 s", "default 60 s", "gap 30 min", "last 24 h"} <= defaults(shared)


@pytest.mark.parametrize("what", [topics, schema_fields, feature_names, dead_letter_reasons])
def test_the_doc_names_everything_the_shared_contract_names(
    what: Callable[[str], set[str]], shared: str, doc: str
) -> None:
    missing = what(shared) - what(doc)
    assert not missing, f"docs/contract.md drops {sorted(missing)} ({what.__name__})"


def test_the_doc_states_every_default_of_the_shared_contract(shared: str, doc: str) -> None:
    missing = {phrase for phrase in defaults(shared) if phrase not in _words(doc)}
    assert not missing, f"docs/contract.md does not state {sorted(missing)}"


def test_the_docs_dead_letter_reasons_are_the_codes() -> None:
    assert dead_letter_reasons(DOC.read_text()) == set(get_args(DeadLetterReason))


def test_the_docs_features_are_the_codes() -> None:
    named = feature_names(DOC.read_text())
    contract = set(CARD_FEATURES) | set(MERCHANT_FEATURES)
    assert named - set(TXN_FEATURES) == contract
    # Transaction features are the service's addition: named all together or not at all.
    assert named & set(TXN_FEATURES) in (set(), set(TXN_FEATURES))


def test_expand() -> None:
    assert _expand("card_count_{1m,24h}") == ["card_count_1m", "card_count_24h"]
    assert _expand("card_session_count") == ["card_session_count"]
