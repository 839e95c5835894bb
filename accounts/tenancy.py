"""Tenancy scoping for every tenant-owned model.

Views, API views, serializers and forms reach tenant rows only through ``for_org`` /
``for_project``. Code that legitimately works across tenants (the dispatcher, the admin,
maintenance) says so with ``all_tenants()``, so ``grep all_tenants`` lists every such read.
The default manager does not filter: Django's docs warn that a filtering default manager
hides rows from related lookups and tools such as dumpdata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self, TypeVar

from django.db import models

if TYPE_CHECKING:
    from accounts.models import Organization, Project

_M = TypeVar("_M", bound=models.Model)


class TenantQuerySet(models.QuerySet[_M]):
    def for_org(self, org: Organization) -> Self:
        """Rows owned by ``org``."""
        return self.filter(organization=org)

    def for_project(self, project: Project) -> Self:
        """Rows of ``project`` (and so of its organization)."""
        return self.filter(organization_id=project.organization_id, project=project)

    def all_tenants(self) -> Self:
        """Every tenant's rows. Only for the dispatcher, the admin and maintenance code."""
        return self.all()
