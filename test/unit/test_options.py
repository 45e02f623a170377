"""The options are declared once (OcrOptions); the parser and the OpenAPI document follow it."""

from __future__ import annotations

import pytest
from fake_ocr import api_client

from ocr_common.db import make_engine, make_session_factory
from ocr_common.errors import BadRequest
from ocr_common.options import OPTION_FIELDS, OcrOptions, Preprocess, parse_options
from ocr_common.settings import MAX_DPI, MIN_DPI


def parse(**values: object) -> OcrOptions:
    return parse_options(values, languages=lambda: ("eng", "deu"), max_pages=10)


def test_options_read_back_from_their_query_are_the_same() -> None:
    options = parse(psm="6", pages="7,1-3", dpi=" 200", preprocess="AUTO", lang="eng+deu")
    assert options == OcrOptions(
        psm=6, pages=(1, 2, 3, 7), dpi=200, preprocess=Preprocess.AUTO, lang="eng+deu"
    )
    assert parse(**options.to_values()) == options
    assert OcrOptions.model_validate_json(options.to_json()) == options


@pytest.mark.parametrize("given", ["deu+eng", "deu eng", " deu + eng ", "deu++eng"])
def test_languages_are_joined_by_plus_or_by_a_space(given: str) -> None:
    # ?lang=deu+eng in a query string arrives as "deu eng": + is a space there.
    assert parse(lang=given).lang == "deu+eng"


def test_pages_also_come_as_a_json_list() -> None:
    assert parse(pages=[3, 1]).pages == (1, 3)
    with pytest.raises(BadRequest) as info:
        parse(pages=[0])
    assert info.value.field == "pages"


def test_the_openapi_parameters_and_bodies_come_from_the_model(sqlite_url: str) -> None:
    client = api_client(make_session_factory(make_engine(sqlite_url)), database_url=sqlite_url)
    spec = client.get("/openapi.json").get_json()
    params = {p["name"]: p["schema"] for p in spec["paths"]["/v1/ocr"]["post"]["parameters"]}
    assert set(OPTION_FIELDS) <= set(params)
    assert (params["dpi"]["minimum"], params["dpi"]["maximum"]) == (MIN_DPI, MAX_DPI)
    assert params["pages"]["type"] == "string" and params["psm"]["default"] == 3
    assert params["preprocess"]["enum"] == ["none", "auto"]
    schemas = spec["components"]["schemas"]
    assert set(OPTION_FIELDS) | {"document"} == set(schemas["JsonDocument"]["properties"])
    assert set(OPTION_FIELDS) == set(schemas["OcrOptions"]["properties"])
