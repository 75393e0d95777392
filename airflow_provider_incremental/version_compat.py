"""Airflow imports in one place. The provider needs Airflow >= 3.0, where ``airflow.sdk`` is the API.

Only what every operator module needs: the trigger module imports ``airflow.triggers.base`` itself,
so parsing a DAG file does not pay for it.
"""

from __future__ import annotations

from airflow.sdk import BaseOperator, BaseSensorOperator, Context

__all__ = ["BaseOperator", "BaseSensorOperator", "Context"]
