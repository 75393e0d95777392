"""pytest plugin (auto-loaded through the ``pytest11`` entry point): the ``local_bigquery`` fixture.

Use it to test your own DAGs against a local BigQuery:

.. code-block:: python

    def test_my_dag(local_bigquery):
        # AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT now points at local_bigquery.endpoint
        ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from airflow_provider_incremental.local.emulator import LocalBigQuery


@pytest.fixture(scope="session")
def local_bigquery() -> Iterator[LocalBigQuery]:
    """A local BigQuery emulator for the test session, with ``google_cloud_default`` pointing at it.

    Started once per session on a free loopback port with a fresh data dir, stopped at the end
    (also when tests fail or the run is interrupted). Reuses ``BIGQUERY_EMULATOR_HOST`` when set.
    """
    with LocalBigQuery() as server:
        env = server.airflow_env()
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
