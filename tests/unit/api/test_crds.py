"""The CRDs of the source tree are valid draft 7 schemas.

The compiled check that accepts a valid manifest (``KindSchema.accepts``) does not check the
schema it compiles; the validator does, but only when a manifest is refused. This holds
every shipped schema to the validator's check, whatever manifests the other tests load.
"""

from __future__ import annotations

import jsonschema
import pytest

from kvmrec.api import schema


@pytest.mark.parametrize("kind", sorted(schema.registry()))
def test_the_schema_of_every_kind_is_valid_draft_7(kind: str) -> None:
    jsonschema.Draft7Validator.check_schema(schema.registry()[kind].schema)


def test_a_schema_draft_7_refuses_is_refused_when_its_validator_is_built() -> None:
    broken = schema.KindSchema(
        kind="Broken", plural="brokens", source=schema.crds_dir(), schema={"type": "nonsense"}
    )
    with pytest.raises(jsonschema.SchemaError):
        broken.validator  # noqa: B018
