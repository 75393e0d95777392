"""Narrow unit tests of the hook's error paths (the emulator cannot be made to produce these)."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core.exceptions import BadRequest, NotFound

from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook, make_job_id, make_labels


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (
            ("airflow", "dag", "task", "manual__2024-03-01T00:00:00+00:00"),
            "airflow__dag__task__manual__2024-03-01T00_00_00_00_00",
        ),
        (("a b", "c.d", "é"), "a_b__c_d___"),
    ],
)
def test_make_job_id(parts: tuple[str, ...], expected: str) -> None:
    assert make_job_id(*parts) == expected


def test_long_job_ids_never_collide_by_truncation() -> None:
    head = "d" * 990
    stage, merge = make_job_id(head, "customers", "stage"), make_job_id(head, "customers", "merge")
    assert stage != merge and len(stage) <= 1024 and len(merge) <= 1024
    assert stage.endswith("__stage") and merge.endswith("__merge")


def test_make_labels() -> None:
    assert make_labels({"Team": "Billing Ops"}, airflow_dag="My.DAG") == {
        "team": "billing_ops",
        "airflow_dag": "my_dag",
    }


class Calls:
    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, Exception):
            raise outcome


def test_concurrent_creation_error_is_fine_when_the_object_exists() -> None:
    hook = IncrementalBigQueryHook.__new__(IncrementalBigQueryHook)
    create, get = Calls(BadRequest("Failed to commit DuckLake transaction")), Calls()
    hook._create(create, get)
    assert (create.count, get.count) == (1, 1)


def test_concurrent_creation_error_is_retried_until_it_exists() -> None:
    hook = IncrementalBigQueryHook.__new__(IncrementalBigQueryHook)
    create = Calls(BadRequest("Failed to commit DuckLake transaction"))
    get = Calls(NotFound("no"))
    hook._create(create, get)
    assert (create.count, get.count) == (2, 1)


def test_other_creation_errors_are_raised() -> None:
    hook = IncrementalBigQueryHook.__new__(IncrementalBigQueryHook)
    with pytest.raises(BadRequest, match="Invalid dataset"):
        hook._create(Calls(BadRequest("Invalid dataset name")), Calls(NotFound("no")))
