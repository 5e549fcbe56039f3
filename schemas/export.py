"""JSON Schema export of every wire record, for producers and consumers in other languages."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.records import WIRE_MODELS


def write_json_schemas(out_dir: Path) -> list[Path]:
    """Write one ``<record>.schema.json`` per wire model into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in WIRE_MODELS.items():
        path = out_dir / f"{name}.schema.json"
        schema = model.model_json_schema(mode="validation")
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
