"""The hook's reliability paths, with a mocked client (issue 7): conflict retries, lost responses, timeouts.

The integration tests provoke the same paths against the emulator; these pin them down deterministically,
including BigQuery's own conflict message, which the local emulator never produces.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest
import requests
from google.api_core.exceptions import BadRequest, Conflict, NotFound
from pytest_mock import MockerFixture

from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook, _bound_request_timeout

BIGQUERY_CONFLICT = (
    "Transaction is aborted due to concurrent update against table p:d.t. "
    "Transaction ID: 1a2b. Please retry the transaction."
)
EMULATOR_CONFLICT = "Failed to commit: Failed to commit DuckLake transaction."


def job(job_id: str, *, error: Exception | None = None, state: str = "DONE") -> MagicMock:
    mock = MagicMock(job_id=job_id, state=state, error_result=None)
    mock.result.side_effect = error
    return mock


@pytest.fixture
def client(mocker: MockerFixture) -> MagicMock:
    return MagicMock()


@pytest.fixture
def hook(
    mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch, client: MagicMock
) -> IncrementalBigQueryHook:
    conn = {"conn_type": "google_cloud_platform", "extra": {"project": "p", "is_anonymous": True}}
    monkeypatch.setenv("AIRFLOW_CONN_MOCKED", json.dumps(conn))
    hook = IncrementalBigQueryHook(gcp_conn_id="mocked")
    mocker.patch.object(hook, "client", return_value=client)
    return hook


@pytest.fixture
def sleep(mocker: MockerFixture) -> MagicMock:
    return mocker.patch("airflow_provider_incremental.hooks.bigquery.time.sleep")


@pytest.mark.parametrize(
    "message", [BIGQUERY_CONFLICT, EMULATOR_CONFLICT, "Could not serialize access to table"]
)
def test_a_job_failing_on_a_concurrent_update_is_rerun_under_the_next_id(
    hook: IncrementalBigQueryHook, client: MagicMock, sleep: MagicMock, message: str
) -> None:
    client.get_job.side_effect = NotFound("no such job")
    jobs = [job("j", error=BadRequest(message)), job("j_1")]
    submit = MagicMock(side_effect=jobs)
    assert hook._run_job("j", submit) is jobs[1]
    assert [c.args[0] for c in submit.call_args_list] == ["j", "j_1"]
    assert sleep.call_count == 1


def test_other_job_errors_are_not_retried(
    hook: IncrementalBigQueryHook, client: MagicMock, sleep: MagicMock
) -> None:
    client.get_job.side_effect = NotFound("no such job")
    submit = MagicMock(return_value=job("j", error=BadRequest("Syntax error: Unexpected keyword")))
    with pytest.raises(BadRequest, match="Syntax error"):
        hook._run_job("j", submit)
    assert submit.call_count == 1 and sleep.call_count == 0


def test_conflict_retries_are_bounded(
    hook: IncrementalBigQueryHook, client: MagicMock, sleep: MagicMock
) -> None:
    client.get_job.side_effect = NotFound("no such job")
    submit = MagicMock(side_effect=lambda i: job(i, error=BadRequest(BIGQUERY_CONFLICT)))
    with pytest.raises(BadRequest, match="concurrent update"):
        hook._run_job("j", submit, max_attempts=3)
    assert submit.call_count == 3 and sleep.call_count == 2


def test_a_job_created_by_a_lost_request_is_reattached_not_resubmitted(
    hook: IncrementalBigQueryHook, client: MagicMock
) -> None:
    """Submitting raised (the response was lost), but the job exists: it is used, not run again."""
    created = job("j")
    client.get_job.side_effect = [NotFound("no such job"), created]
    submit = MagicMock(side_effect=requests.ConnectionError("Connection aborted"))
    assert hook._run_job("j", submit) is created
    assert submit.call_count == 1


def test_a_submit_error_without_a_job_is_raised(hook: IncrementalBigQueryHook, client: MagicMock) -> None:
    client.get_job.side_effect = NotFound("no such job")
    submit = MagicMock(side_effect=requests.ConnectionError("Connection refused"))
    with pytest.raises(requests.ConnectionError, match="refused"):
        hook._run_job("j", submit)


def test_a_conflict_on_submit_reattaches(hook: IncrementalBigQueryHook, client: MagicMock) -> None:
    created = job("j", state="RUNNING")
    client.get_job.side_effect = [NotFound("no such job"), created]
    submit = MagicMock(side_effect=Conflict("Already Exists: Job p:j"))
    assert hook._run_job("j", submit) is created


def test_a_job_that_failed_in_an_earlier_try_is_not_reused(
    hook: IncrementalBigQueryHook, client: MagicMock
) -> None:
    failed = job("j")
    failed.error_result = {"reason": "invalidQuery", "message": "boom"}
    client.get_job.side_effect = [failed, NotFound("no such job")]
    submit = MagicMock(return_value=job("j_1"))
    assert hook._run_job("j", submit).job_id == "j_1"
    submit.assert_called_once_with("j_1")


@pytest.mark.parametrize(
    "error",
    [
        BadRequest(EMULATOR_CONFLICT),
        BadRequest("Conflict on update!"),  # seen from concurrent CREATE TABLE IF NOT EXISTS on the emulator
        Conflict("Already Exists: Table p:d._state"),
    ],
)
def test_ddl_that_loses_a_creation_race_is_run_again(
    hook: IncrementalBigQueryHook, mocker: MockerFixture, sleep: MagicMock, error: Exception
) -> None:
    run_query = mocker.patch.object(hook, "run_query", side_effect=[error, []])
    hook.run_ddl(["CREATE TABLE IF NOT EXISTS a (x INT64)", "CREATE TABLE IF NOT EXISTS b (x INT64);"])
    assert run_query.call_count == 2
    assert (
        run_query.call_args.args[0]
        == "CREATE TABLE IF NOT EXISTS a (x INT64);\nCREATE TABLE IF NOT EXISTS b (x INT64);"
    )


def test_ddl_errors_that_are_not_races_are_raised(
    hook: IncrementalBigQueryHook, mocker: MockerFixture
) -> None:
    run_query = mocker.patch.object(hook, "run_query", side_effect=BadRequest("Syntax error"))
    with pytest.raises(BadRequest):
        hook.run_ddl(["CREATE TABLE a"])
    assert run_query.call_count == 1


@pytest.mark.parametrize(
    ("given", "sent"),
    [(None, 7.0), (600, 7.0), (3, 3), ((2, None), (2, 7.0)), ((61, 600), (7.0, 7.0)), (object(), 7.0)],
)
def test_every_request_of_the_client_times_out_within_request_timeout(given: Any, sent: Any) -> None:
    seen: list[Any] = []
    session = SimpleNamespace(request=lambda *args, **kwargs: seen.append(kwargs.get("timeout")))
    client: Any = SimpleNamespace(_http=session)
    _bound_request_timeout(client, 7.0)
    kwargs = {} if given is None else {"timeout": given}
    client._http.request("GET", "http://bq", **kwargs)
    assert seen == [sent]
