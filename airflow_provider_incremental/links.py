"""Extra links (BigQuery console) and OpenLineage datasets of the provider's operators.

Links are pushed as whole URLs to XCom under the link's ``xcom_key`` during ``execute``, as Airflow 3
expects; nothing from the Google provider is imported (its link module costs ~1 s of DAG parse time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

    from airflow_provider_incremental.version_compat import Context

CONSOLE = "https://console.cloud.google.com/bigquery"


class _XComLink(BaseOperatorLink):
    """A link whose URL the task stored in XCom under :attr:`xcom_key`."""

    name: ClassVar[str] = ""

    @property
    def xcom_key(self) -> str:
        return f"_link_{type(self).__name__}"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key=self.xcom_key)
        return value if isinstance(value, str) else ""

    def persist(self, context: Context, url: str) -> None:
        ti = context.get("ti")
        if ti is not None and hasattr(ti, "xcom_push"):
            ti.xcom_push(key=self.xcom_key, value=url)


class BigQueryConsoleTableLink(_XComLink):
    """The destination table in the BigQuery console."""

    name = "BigQuery Table"


class BigQueryConsoleDatasetLink(_XComLink):
    """The target dataset in the BigQuery console."""

    name = "BigQuery Dataset"


class BigQueryConsoleJobLink(_XComLink):
    """The last BigQuery job of the task in the BigQuery console."""

    name = "BigQuery Job"


def table_url(project: str, dataset: str, table: str) -> str:
    p, d, t = (quote(x, safe="") for x in (project, dataset, table))
    return f"{CONSOLE}?project={p}&p={p}&d={d}&t={t}&page=table"


def dataset_url(project: str, dataset: str) -> str:
    p, d = (quote(x, safe="") for x in (project, dataset))
    return f"{CONSOLE}?project={p}&p={p}&d={d}&page=dataset"


def job_url(project: str, job_id: str, location: str | None) -> str:
    p, j = quote(project, safe=""), quote(job_id, safe="")
    return f"{CONSOLE}?project={p}&j=bq:{quote(location or 'US', safe='')}:{j}&page=queryresults"


def openlineage(inputs: list[tuple[str, str]], outputs: list[tuple[str, str]]) -> Any:
    """``OperatorLineage`` of ``(namespace, name)`` datasets, or ``None`` without the OpenLineage provider."""
    try:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    return OperatorLineage(
        inputs=[Dataset(namespace=ns, name=name) for ns, name in inputs],
        outputs=[Dataset(namespace=ns, name=name) for ns, name in outputs],
    )


class OpenLineageMixin:
    """``get_openlineage_facets_on_complete`` from the ``(namespace, name)`` datasets ``execute`` stored."""

    _lineage: tuple[list[tuple[str, str]], list[tuple[str, str]]] = ([], [])

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage inputs and outputs of the last ``execute``, when the OpenLineage provider is installed."""
        return openlineage(*self._lineage)
