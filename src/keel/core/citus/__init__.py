"""Keel on Citus: distribute the tenant-scoped tables by `tenant_id`, report placement.

`enable` makes the shared tables reference tables, distributes the scoped ones
(colocated) and keeps the job queue on the coordinator; `status` shows the nodes, the
shards and the tenants' placement. The schema is the one the migrations build; see
`keel.core.citus.layout` for what Citus changes about Keel's triggers, and why.
"""

from keel.core.citus.enable import CitusUnavailable, EnableReport, enable, ensure_citus
from keel.core.citus.status import Status, status

__all__ = ["CitusUnavailable", "EnableReport", "Status", "enable", "ensure_citus", "status"]
