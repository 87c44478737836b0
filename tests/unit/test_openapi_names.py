"""Every operation of /openapi.json is named for what it does, so generated clients read well
(``generateKey``, not ``post_v1_orgs_org_id_keys``)."""

from __future__ import annotations

import json
import re

from service.http.openapi import build_openapi


def test_every_operation_id_is_a_unique_camel_case_name() -> None:
    ids = [op["operationId"] for path in build_openapi()["paths"].values() for op in path.values()]
    assert [i for i in ids if not re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", i)] == []
    assert len(ids) == len(set(ids))
    assert {"generateKey", "revokeKey", "verifyKey", "listKeys", "reportUsage"} <= set(ids)


def test_every_schema_reference_resolves() -> None:
    document = build_openapi()
    text = json.dumps(document)
    named = set(document["components"]["schemas"])
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', text))
    assert refs - named == set()
