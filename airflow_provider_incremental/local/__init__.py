"""The embedded default: a local BigQuery emulator, its console script and its pytest fixture."""

from __future__ import annotations

from airflow_provider_incremental.local.emulator import EmulatorError, LocalBigQuery

__all__ = ["EmulatorError", "LocalBigQuery"]
