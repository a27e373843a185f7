"""The store-feature check applied to Redis and upstream values: the decoder's strict rules."""

from __future__ import annotations

import math

import pytest

from app.features.schema import StoreSchema
from app.model.decoder import MAX_STRING
from app.model.manifest import Feature

SCHEMA = StoreSchema(
    [
        Feature(name="age", dtype="int", source="store"),
        Feature(name="income", dtype="float", source="store"),
        Feature(name="country", dtype="string", source="store"),
        Feature(name="vip", dtype="bool", source="store"),
        Feature(name="score", dtype="float", source="store", nullable=True),
    ]
)
GOOD = {"age": 41, "income": 52000.5, "country": "DE", "vip": False, "score": None}


class TestStoreSchema:
    @pytest.mark.parametrize(
        "value",
        [GOOD, {**GOOD, "income": 52000}, {**GOOD, "score": 0.5}, {**GOOD, "extra": [1, 2]}],
        ids=["good", "int-for-float", "nullable-set", "extra-name-kept"],
    )
    def test_valid_values_pass(self, value) -> None:
        """Conforming objects pass, an int stands for a float, and names the model does not use are allowed."""
        assert SCHEMA.problem(value) is None

    @pytest.mark.parametrize(
        "value,expected",
        [
            ({}, "age: missing"),
            ([1, 2, 3], "expected an object, got list"),
            ("str", "expected an object, got str"),
            (None, "expected an object, got NoneType"),
            ({**GOOD, "age": "41"}, "age: invalid str"),
            ({**GOOD, "age": 41.0}, "age: invalid float"),
            ({**GOOD, "age": True}, "age: invalid bool"),
            ({**GOOD, "income": True}, "income: invalid bool"),
            ({**GOOD, "income": math.inf}, "income: invalid float"),
            ({**GOOD, "income": math.nan}, "income: invalid float"),
            ({**GOOD, "country": None}, "country: null"),
            ({**GOOD, "country": "x" * (MAX_STRING + 1)}, "country: invalid str"),
            ({**GOOD, "vip": 1}, "vip: invalid int"),
            ({**GOOD, "country": {"nested": 1}}, "country: invalid dict"),
        ],
    )
    def test_bad_values_name_the_problem(self, value, expected) -> None:
        """Each wrong shape or type is refused, naming the feature."""
        assert SCHEMA.problem(value) == expected

    def test_names_only_accept_finite_scalars(self) -> None:
        """Built from bare names, the check still refuses missing names, containers and non-finite numbers."""
        schema = StoreSchema(["a", "b"])
        assert schema.problem({"a": 1, "b": "x"}) is None
        assert schema.problem({"a": None, "b": True}) is None
        assert schema.problem({"a": 1}) == "b: missing"
        assert schema.problem({"a": [1], "b": 1}) == "a: invalid list"
        assert schema.problem({"a": math.nan, "b": 1}) == "a: invalid float"
