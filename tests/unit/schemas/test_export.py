"""JSON Schema export of the wire models."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.export import write_json_schemas
from schemas.records import WIRE_MODELS

COMMITTED = Path(__file__).resolve().parents[3] / "schemas" / "json"


def test_writes_one_schema_per_wire_model(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "json"
    written = write_json_schemas(out)
    assert sorted(p.name for p in written) == sorted(f"{n}.schema.json" for n in WIRE_MODELS)
    assert sorted(out.iterdir()) == sorted(written)
    for name, model in WIRE_MODELS.items():
        schema = json.loads((out / f"{name}.schema.json").read_text())
        assert isinstance(schema["properties"], dict)
        assert set(schema["properties"]) == set(model.model_fields)
        assert schema["title"] == model.__name__


def test_export_is_deterministic(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in write_json_schemas(tmp_path / "a")]
    second = [p.read_bytes() for p in write_json_schemas(tmp_path / "b")]
    assert first == second


def test_committed_schemas_are_up_to_date(tmp_path: Path) -> None:
    for path in write_json_schemas(tmp_path):
        assert path.read_text() == (COMMITTED / path.name).read_text(), path.name
