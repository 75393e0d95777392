"""Apache Airflow provider for incremental, exactly-once loading into Google BigQuery."""

from __future__ import annotations

__version__ = "0.1.0"
