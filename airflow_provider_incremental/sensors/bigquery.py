"""Wait until a BigQuery table has the timestamp columns (and the data) a load depends on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf

from airflow_provider_incremental.version_compat import BaseSensorOperator

try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
except ImportError:  # Airflow < 3.1
    from airflow.exceptions import (  # type: ignore[attr-defined,no-redef]
        AirflowException,
        AirflowFailException,
        AirflowSkipException,
    )

if TYPE_CHECKING:
    from airflow.sdk import PokeReturnValue

    from airflow_provider_incremental.version_compat import Context


class BigQueryTimestampColumnSensor(BaseSensorOperator):
    """Wait until ``table`` has the wanted timestamp columns with an allowed type.

    A missing table or dataset means "not yet". A wanted column present with a disallowed type (say a
    STRING ``created_at``) fails at once: waiting will not fix it (unless ``wait_on_wrong_type``). With
    ``fresh_through`` the sensor also waits until ``MAX(column) >= fresh_through``, so that a window is
    only read once its data has arrived. Deferrable: pokes once, then defers to
    :class:`~airflow_provider_incremental.triggers.bigquery.BigQueryTimestampColumnTrigger`.

    Returns (XCom) ``{"table", "columns": {name: type}, "max_cursor"}``.

    :param table: ``project.dataset.table`` or ``dataset.table`` (templated).
    :param columns: the wanted columns.
    :param require: ``any`` (one wanted column is enough) or ``all``.
    :param allowed_types: accepted data types.
    :param fresh_through: a timestamp (ISO string or datetime) the newest value must reach, e.g.
        ``"{{ data_interval_end }}"`` (templated).
    :param wait_on_wrong_type: keep waiting when a column has a disallowed type instead of failing.
    :param deferrable: defer to the triggerer between checks (``[operators] default_deferrable``).
    :param poll_interval: seconds between checks in deferrable mode.
    :param gcp_conn_id: the Google Cloud connection.
    :param location: the BigQuery location.
    :param impersonation_chain: service account(s) to impersonate (kept when deferred).
    :param api_endpoint: BigQuery endpoint override (else the connection's ``api_endpoint`` extra).
    """

    template_fields: Sequence[str] = ("table", "fresh_through", "impersonation_chain")
    ui_color = "#f0eee4"

    def __init__(
        self,
        *,
        table: str,
        columns: Sequence[str] = ("created_at", "updated_at"),
        require: str = "any",
        allowed_types: Sequence[str] = ("TIMESTAMP", "DATETIME"),
        fresh_through: str | datetime | None = None,
        wait_on_wrong_type: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60.0,
        gcp_conn_id: str = "google_cloud_default",
        location: str | None = None,
        impersonation_chain: str | Sequence[str] | None = None,
        api_endpoint: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.table = table
        self.columns = [columns] if isinstance(columns, str) else columns  # one column, not its letters
        self.require = require
        self.allowed_types = allowed_types
        self.fresh_through = fresh_through
        self.wait_on_wrong_type = wait_on_wrong_type
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.gcp_conn_id = gcp_conn_id
        self.location = location
        self.impersonation_chain = impersonation_chain
        self.api_endpoint = api_endpoint

    def _fresh_through(self) -> datetime | None:
        value = self.fresh_through
        if value is None or value == "":
            return None
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        if parsed.tzinfo is None:
            raise ValueError(f"fresh_through must carry a time zone, got {value!r}")
        return parsed

    def _check(self) -> dict[str, Any]:
        from airflow_provider_incremental.triggers.bigquery import probe

        result = probe(
            table=self.table,
            columns=self.columns,
            require=self.require,
            allowed_types=self.allowed_types,
            fresh_through=self._fresh_through(),
            gcp_conn_id=self.gcp_conn_id,
            location=self.location,
            impersonation_chain=self.impersonation_chain,
            api_endpoint=self.api_endpoint,
        )
        self.log.info("%s", result["message"])
        if result["wrong_type"] and not result["satisfied"] and not self.wait_on_wrong_type:
            # AirflowFailException: no retries (they would not help either); soft_fail turns it into a skip
            raise AirflowFailException(
                f"{result['message']}. Waiting will not fix this: change the column type."
            )
        return result

    def _xcom(self, result: dict[str, Any]) -> dict[str, Any]:
        return {"table": self.table, "columns": result["columns"], "max_cursor": result["max_cursor"]}

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow.sdk import PokeReturnValue

        result = self._check()
        return PokeReturnValue(is_done=bool(result["satisfied"]), xcom_value=self._xcom(result))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        try:
            result = self._check()
        except AirflowFailException as err:  # BaseSensorOperator.execute does this in the other modes
            if self.soft_fail or getattr(self, "never_fail", False):
                raise AirflowSkipException(f"Skipping: {err}") from err
            raise
        if result["satisfied"]:
            return self._xcom(result)
        from airflow_provider_incremental.triggers.bigquery import BigQueryTimestampColumnTrigger

        fresh = self._fresh_through()
        self.defer(
            trigger=BigQueryTimestampColumnTrigger(
                table=self.table,
                columns=self.columns,
                require=self.require,
                allowed_types=self.allowed_types,
                fresh_through=fresh.isoformat() if fresh else None,
                wait_on_wrong_type=self.wait_on_wrong_type,
                poll_interval=self.poll_interval,
                gcp_conn_id=self.gcp_conn_id,
                location=self.location,
                impersonation_chain=self.impersonation_chain,
                api_endpoint=self.api_endpoint,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: raise on anything but success.

        Raises ``AirflowFailException`` (no retries) for a wrong column type, else ``AirflowException``;
        both become a skip with ``soft_fail`` (``resume_execution`` does that).
        """
        if not event or event.get("status") != "success":
            message = (event or {}).get("message") or "the trigger sent no event"
            result = (event or {}).get("result") or {}
            if result.get("wrong_type") and not self.wait_on_wrong_type:
                raise AirflowFailException(f"{message}. Waiting will not fix this: change the column type.")
            raise AirflowException(message)
        self.log.info("%s", event["message"])
        return self._xcom(event["result"])
