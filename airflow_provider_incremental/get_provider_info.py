"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_incremental import __version__

_INTEGRATION = "Incremental BigQuery"


def _modules(*names: str) -> list[dict[str, Any]]:
    return [
        {
            "integration-name": _INTEGRATION,
            "python-modules": [f"airflow_provider_incremental.{n}" for n in names],
        }
    ]


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-incremental",
        "name": _INTEGRATION,
        "description": "Incremental, exactly-once loading of Chargebee-style exports and BigQuery tables.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://cloud.google.com/bigquery",
                "tags": ["gcp"],
            }
        ],
        "hooks": _modules("hooks.bigquery"),
        "operators": _modules("operators.bigquery", "transfers.json_to_bigquery"),
        "sensors": _modules("sensors.bigquery"),
        "triggers": _modules("triggers.bigquery"),
    }
