"""Tenancy: for_project / for_org never leak another tenant's rows (docs/conventions.md).

Two halves:
- a matrix over every model whose manager has ``for_project`` or ``for_org``, discovered from
  the app registry, so a new tenant model without a builder here fails the suite;
- the AST tripwire: every module that serves requests or serializes for them (views, APIs,
  serializers, forms, dashboard partials; found by what it imports, not by its file name) may
  reach a tenant model only through ``<Model>.objects.for_org(...)`` / ``.for_project(...)``.
"""

from __future__ import annotations

import ast
import datetime
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, FieldError
from django.db import models

from accounts.models import ApiKey, AuditLog, Project, User
from billing.models import Invoice, Subscription, UsageRecord
from jobs.models import (
    Batch,
    ExecutionLog,
    Job,
    JobDependency,
    JobExecution,
    JobThroughput,
    RunOutcome,
    Schedule,
    ScheduleRun,
)
from queues.models import Queue
from workers.models import QueueWorkerAssignment, Worker

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


# --- Builders: one new row of each tenant model inside a given project ----------------------


def org_of(project: Project) -> dict[str, Any]:
    return {"organization_id": project.organization_id}


def build_queue(project: Project) -> Queue:
    return Queue.objects.create(**org_of(project), project=project, name=unique("q"))


def build_job(project: Project) -> Job:
    queue = build_queue(project)
    return Job.objects.create(**org_of(project), project=project, queue=queue, job_type="t")


def build_execution(project: Project) -> JobExecution:
    return JobExecution.objects.create(
        **org_of(project), project=project, job=build_job(project), attempt=1
    )


def build_worker(project: Project) -> Worker:
    return Worker.objects.create(**org_of(project), project=project, name=unique("w"))


def build_api_key(project: Project) -> ApiKey:
    _, prefix = ApiKey.generate()
    return ApiKey.objects.create(
        **org_of(project), project=project, name="k", prefix=prefix, key_hash="0" * 64
    )


BUILDERS: dict[type[models.Model], Callable[[Project], models.Model]] = {
    Project: lambda project: project,
    User: lambda project: User.objects.create_user(
        f"{unique('u')}@example.com", None, organization_id=project.organization_id
    ),
    ApiKey: build_api_key,
    AuditLog: lambda project: AuditLog.objects.create(
        **org_of(project), project=project, action="queue.create"
    ),
    Queue: build_queue,
    Job: build_job,
    Batch: lambda project: Batch.objects.create(**org_of(project), project=project),
    JobDependency: lambda project: JobDependency.objects.create(
        **org_of(project), parent=build_job(project), child=build_job(project)
    ),
    JobExecution: build_execution,
    JobThroughput: lambda project: JobThroughput.objects.create(
        **org_of(project),
        project=project,
        queue=build_queue(project),
        minute=datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC),
        succeeded=1,
    ),
    ExecutionLog: lambda project: ExecutionLog.objects.create(
        **org_of(project),
        job=(execution := build_execution(project)).job,
        execution=execution,
        message="hello",
    ),
    Schedule: lambda project: Schedule.objects.create(
        **org_of(project),
        project=project,
        queue=build_queue(project),
        name=unique("s"),
        cron="* * * * *",
        job_type="t",
    ),
    ScheduleRun: lambda project: ScheduleRun.objects.create(
        **org_of(project),
        schedule=BUILDERS[Schedule](project),
        fire_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        outcome=RunOutcome.SKIPPED_OVERLAP,
    ),
    Worker: build_worker,
    QueueWorkerAssignment: lambda project: QueueWorkerAssignment.objects.create(
        **org_of(project), queue=build_queue(project), worker=build_worker(project)
    ),
    # One per organization, made with the tenant (tests/conftest.py build_tenant).
    Subscription: lambda project: Subscription.objects.get(organization_id=project.organization_id),
    UsageRecord: lambda project: UsageRecord.objects.create(
        **org_of(project), project=project, metric="jobs", day=datetime.date(2026, 1, 1)
    ),
    Invoice: lambda project: Invoice.objects.create(
        **org_of(project),
        number=unique("INV"),
        period_start=datetime.date(2026, 1, 1),
        period_end=datetime.date(2026, 1, 31),
    ),
}


def scoped_models() -> list[type[models.Model]]:
    return [
        model
        for model in apps.get_models()
        if hasattr(model.objects, "for_project") or hasattr(model.objects, "for_org")
    ]


def has_field(model: type[models.Model], name: str) -> bool:
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


def project_scoped(model: type[models.Model]) -> bool:
    """Whether for_project can mean anything: the model has a project, or is Project."""
    return hasattr(model.objects, "for_project") and (
        model is Project or has_field(model, "project")
    )


def pks(queryset: models.QuerySet[Any]) -> set[Any]:
    return set(queryset.values_list("pk", flat=True))


def label(model: type[models.Model]) -> str:
    return model._meta.label


SCOPED = scoped_models()


def test_every_scoped_model_has_a_builder_here():
    assert {label(m) for m in SCOPED} == {label(m) for m in BUILDERS}


def test_the_matrix_covers_at_least_the_core_tenant_models():
    required = {Job, Queue, Worker, ApiKey, AuditLog, Project, Schedule, JobExecution, Batch}
    assert required <= set(SCOPED)


@pytest.mark.parametrize("model", SCOPED, ids=label)
def test_for_org_never_returns_another_orgs_rows(model, project, other_project):
    mine, theirs = BUILDERS[model](project), BUILDERS[model](other_project)
    scoped = model.objects.for_org(project.organization)
    assert mine.pk in pks(scoped)
    assert theirs.pk not in pks(scoped)
    assert set(scoped.values_list("organization_id", flat=True)) == {project.organization_id}
    assert pks(model.objects.for_org(other_project.organization)) & pks(scoped) == set()


@pytest.mark.parametrize("model", [m for m in SCOPED if project_scoped(m)], ids=label)
def test_for_project_never_returns_another_projects_rows(model, project, other_project):
    mine, theirs = BUILDERS[model](project), BUILDERS[model](other_project)
    # A second project of the same organization: for_project must not stop at the org.
    sibling = Project.objects.create(organization_id=project.organization_id, name="sibling")
    cousin = BUILDERS[model](sibling)
    scoped = model.objects.for_project(project)
    assert mine.pk in pks(scoped)
    assert theirs.pk not in pks(scoped)
    assert cousin.pk not in pks(scoped)
    assert cousin.pk in pks(model.objects.for_org(project.organization))
    assert set(scoped.values_list("organization_id", flat=True)) == {project.organization_id}


@pytest.mark.parametrize(
    "model", [m for m in SCOPED if hasattr(m.objects, "all_tenants")], ids=label
)
def test_all_tenants_returns_every_tenants_rows(model, project, other_project):
    mine, theirs = BUILDERS[model](project), BUILDERS[model](other_project)
    assert {mine.pk, theirs.pk} <= pks(model.objects.all_tenants())


@pytest.mark.parametrize(
    "model",
    [m for m in SCOPED if hasattr(m.objects, "for_project") and not project_scoped(m)],
    ids=label,
)
def test_for_project_on_a_model_without_a_project_fails_loudly(model, project):
    # TenantQuerySet offers for_project to every model; where there is no project column it
    # must raise, never quietly return rows.
    with pytest.raises(FieldError):
        list(model.objects.for_project(project))


# --- The AST tripwire ----------------------------------------------------------------------------

# A module serves requests or shapes tenant data for them when it imports any of these: it is
# scanned whatever its file is called (api.py, queue_api.py, views.py, api_base.py, forms...).
REQUEST_MODULES = (
    "rest_framework.views",
    "rest_framework.generics",
    "rest_framework.viewsets",
    "rest_framework.decorators",
    "rest_framework.request",
    "rest_framework.response",
    "rest_framework.serializers",
    "django.http",
    "django.shortcuts",
    "django.views",
    "django.forms",
    "django.template",
    "django_htmx",
    "accounts.api_base",
    "taskforge.lib.serializers",
)
# Modules that import those on purpose and are not tenant-scoped request paths: the Django
# admin is staff-only and spans tenants by design; authentication resolves an API key or a
# user before any tenant is known.
NOT_TENANT_SCOPED = {"admin.py", "authentication.py"}
ALLOWED_SCOPES = {"for_org", "for_project"}
MANAGERS = {"objects", "_default_manager", "_base_manager"}
SHORTCUTS = {"get_object_or_404", "get_list_or_404"}


def tenant_model_names() -> set[str]:
    return {m.__name__ for m in apps.get_models() if has_field(m, "organization")}


def app_dirs(root: Path = ROOT) -> list[Path]:
    """Every installed app that lives in this repository (so a new app is scanned too)."""
    return sorted(
        Path(config.path)
        for config in apps.get_app_configs()
        if Path(config.path).resolve().is_relative_to(root)
        and not Path(config.path).resolve().is_relative_to(root / ".venv")
    )


def serves_requests(source: str) -> bool:
    """Does this module import a request-serving or serializing library (REQUEST_MODULES)?"""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from django import forms" imports django.forms
            modules = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        if any(m == r or m.startswith(r + ".") for m in modules for r in REQUEST_MODULES):
            return True
    return False


def scanned_files(dirs: list[Path]) -> Iterator[Path]:
    """Every module, outside migrations, that serves requests or serializes for them (by what
    it imports, not by its name)."""
    for directory in dirs:
        for path in sorted(directory.rglob("*.py")):
            parts = path.relative_to(directory).parts
            if "migrations" in parts or path.name in NOT_TENANT_SCOPED:
                continue
            if serves_requests(path.read_text()):
                yield path


def _aliases(tree: ast.AST, tenant_models: set[str]) -> set[str]:
    """Tenant model names plus the local names they are imported under (``import X as Y``)."""
    names = set(tenant_models)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names |= {a.asname for a in node.names if a.asname and a.name in tenant_models}
    return names


def _model_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # models.Job
        return node.attr
    return None


def unscoped_uses(source: str, tenant_models: set[str], filename: str = "<src>") -> list[str]:
    """Return ``file:line: text`` for each unscoped access to a tenant model's manager."""
    tree = ast.parse(source, filename)
    names = _aliases(tree, tenant_models)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        bad = False
        if (
            isinstance(node, ast.Attribute)
            and node.attr in MANAGERS
            and _model_name(node.value) in names
        ):
            scope = parents.get(node)
            call = parents.get(scope) if scope is not None else None
            bad = not (
                isinstance(scope, ast.Attribute)
                and scope.attr in ALLOWED_SCOPES
                and isinstance(call, ast.Call)
                and call.func is scope
            )
        elif isinstance(node, ast.Call) and _model_name(node.func) in SHORTCUTS and node.args:
            # get_object_or_404(Job, pk=...) searches every tenant; pass a scoped queryset.
            bad = _model_name(node.args[0]) in names
        if bad:
            found.append((node.lineno, node.col_offset, ast.unparse(node)))
    return [f"{filename}:{line}: {text}" for line, _, text in sorted(found)]


def test_views_apis_serializers_and_forms_reach_tenant_models_only_through_scopes():
    tenant_models = tenant_model_names()
    found = [
        use
        for path in scanned_files(app_dirs())
        for use in unscoped_uses(path.read_text(), tenant_models, str(path.relative_to(ROOT)))
    ]
    assert found == [], "use Model.objects.for_project(...) / .for_org(...):\n" + "\n".join(found)


def test_the_tripwire_scans_every_app_of_this_repository():
    assert {p.name for p in app_dirs()} >= {
        "taskforge",
        "accounts",
        "queues",
        "jobs",
        "workers",
        "billing",
    }


def test_the_tripwire_knows_the_tenant_models():
    assert {"Job", "Queue", "Worker", "ApiKey", "AuditLog", "Project", "Schedule", "User"} <= (
        tenant_model_names()
    )
    assert "Organization" not in tenant_model_names()


def test_the_tripwire_finds_request_modules_by_what_they_import_not_by_name(tmp_path):
    files = {
        # Request-serving modules, whatever they are called.
        "jobs/queue_api.py": "from rest_framework.views import APIView\n",
        "jobs/schedules/api.py": "from accounts.api_base import TenantAPIView\n",
        "jobs/dashboard.py": "from django.shortcuts import render\n",
        "queues/views/__init__.py": "from django.http import HttpResponse\n",
        "queues/shapes.py": "import rest_framework.serializers\n",
        "queues/forms.py": "from django import forms\n",
        "queues/partials.py": "from django_htmx.http import HttpResponseStopPolling\n",
        # Not request paths: services, models, migrations, the staff-only admin.
        "jobs/api_helpers.py": "from jobs.models import Job\n",
        "queues/services.py": "from rest_framework.exceptions import NotFound\n",
        "queues/models.py": "from django.db import models\n",
        "queues/migrations/0001_views.py": "from django.http import HttpResponse\n",
        "queues/admin.py": "from django.http import HttpResponse\n",
    }
    for name, source in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    found = {
        str(p.relative_to(tmp_path))
        for p in scanned_files([tmp_path / "jobs", tmp_path / "queues"])
    }
    assert found == {
        "jobs/queue_api.py",
        "jobs/schedules/api.py",
        "jobs/dashboard.py",
        "queues/views/__init__.py",
        "queues/shapes.py",
        "queues/forms.py",
        "queues/partials.py",
    }


def test_the_tripwire_scans_the_modules_that_escaped_the_old_name_rule():
    scanned = {str(p.relative_to(ROOT)) for p in scanned_files(app_dirs())}
    assert {"accounts/api_base.py", "jobs/schedules/api.py", "jobs/schedules/serializers.py"} <= (
        scanned
    )


OFFENDING = """
from jobs.models import Job, Queue as Q
from jobs import models

def detail(request, pk):
    job = Job.objects.get(pk=pk)
    jobs = Job.objects.filter(state="pending").for_project(request.project)
    queues = Q.objects.all()
    qs = models.Job.objects.all()
    manager = Job.objects
    other = Job._default_manager.get(pk=pk)
    scope = Job.objects.for_project
    return get_object_or_404(Job, pk=pk)

class JobSerializer:
    queue = PrimaryKeyRelatedField(queryset=Queue.objects.all())
"""

CLEAN = """
from jobs.models import Job, Queue

def detail(request, pk):
    job = Job.objects.for_project(request.project).get(pk=pk)
    queues = Queue.objects.for_org(request.organization).filter(paused=False)
    job = get_object_or_404(Job.objects.for_project(request.project), pk=pk)
    rows = Organization.objects.all()
    data = request.project.queues.all()
    return job.objects
"""


def test_the_tripwire_flags_unscoped_manager_access():
    found = unscoped_uses(OFFENDING, {"Job", "Queue"})
    assert [line.split(":")[1] for line in found] == [
        "6",
        "7",
        "8",
        "9",
        "10",
        "11",
        "12",
        "13",
        "16",
    ]


def test_the_tripwire_accepts_scoped_access():
    assert unscoped_uses(CLEAN, {"Job", "Queue"}) == []
