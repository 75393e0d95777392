"""Airflow imports in one place. The provider needs Airflow >= 3.0, where ``airflow.sdk`` is the API."""

from __future__ import annotations

from airflow.sdk import BaseOperator, BaseSensorOperator, Context
from airflow.triggers.base import BaseTrigger, TriggerEvent

__all__ = ["BaseOperator", "BaseSensorOperator", "BaseTrigger", "Context", "TriggerEvent"]
