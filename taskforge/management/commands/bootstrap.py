"""Create the first organization, its admin and an API key; safe to run again."""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import Actor
from accounts.models import Organization, Project, User
from queues.models import Queue
from queues.services import QueueNameTaken, create_queue
from taskforge.lib.errors import TaskForgeError
from taskforge.onboarding import DEFAULT_PROJECT_NAME, Onboarding, create_organization


class Command(BaseCommand):
    help = (
        "Create an organization on the starter plan with its admin user, a 'default' project "
        "and queue, and an API key holding every scope. Idempotent: if the admin already "
        "exists in that organization, only what --queue and --staff/--no-staff ask for is "
        "changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--org",
            required=True,
            metavar="NAME",
            help="Name of the organization to create (its slug is derived from it). On a "
            "re-run it must match the organization the admin already belongs to.",
        )
        parser.add_argument(
            "--email",
            required=True,
            help="Email address of the organization's admin user (their login).",
        )
        parser.add_argument(
            "--password",
            help="Password for the admin user. If omitted, a random one is generated and "
            "printed once. Ignored when the admin already exists.",
        )
        parser.add_argument(
            "--staff",
            action=argparse.BooleanOptionalAction,
            help="--staff makes the admin a superuser, who may use the Django admin (/admin/) "
            "and sees every organization there: for local demos. --no-staff makes them an "
            "ordinary organization admin again. Applies on a re-run too; without either, a "
            "new admin is not staff and an existing one is left as is.",
        )
        parser.add_argument(
            "--queue",
            metavar="NAME",
            help="Also create a queue NAME in the 'default' project; on a re-run, if it is "
            "missing.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print one JSON object instead of prose: created, organization, "
            "organization_id, project_id, email, staff, and password / api_key when this run "
            "generated them.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        org: str = options["org"]
        email: str = options["email"]
        password: str | None = options["password"]
        existing = (
            User.objects.all_tenants()
            .filter(email__iexact=email.strip())
            .select_related("organization")
            .first()
        )
        if existing is not None:
            self._already_there(
                existing,
                org.strip(),
                staff=options["staff"],
                queue=options["queue"],
                as_json=options["json"],
            )
            return
        generated = password is None
        if password is None:
            password = secrets.token_urlsafe(12)
        try:
            result = create_organization(name=org, email=email, password=password)
        except TaskForgeError as exc:
            raise CommandError(exc.message) from exc
        if options["staff"]:
            _set_staff(result.organization, result.user, staff=True)
        if options["queue"]:
            _ensure_queue(result.project, options["queue"], result.user)
        self._created(
            result, password if generated else None, queue=options["queue"], as_json=options["json"]
        )

    def _already_there(
        self, user: User, org_name: str, *, staff: bool | None, queue: str | None, as_json: bool
    ) -> None:
        org = user.organization
        if org is None or org.name != org_name:
            where = f"organization {org.name!r}" if org else "no organization"
            raise CommandError(
                f"{user.email} already belongs to {where}, not {org_name!r}; "
                "use another email or the existing organization's name"
            )
        projects = Project.objects.for_org(org)
        project = (
            projects.filter(name=DEFAULT_PROJECT_NAME).first()
            or projects.order_by("created_at").first()
        )
        changes = []
        if staff is not None and user.is_superuser != staff:
            _set_staff(org, user, staff=staff)
            changes.append("made them a superuser" if staff else "made them an ordinary admin")
        if queue and project is not None and _ensure_queue(project, queue, user):
            changes.append(f"created queue {queue!r}")
        if as_json:
            self._print_json(
                created=False,
                organization=org.name,
                organization_id=str(org.id),
                project_id=str(project.id) if project else None,
                email=user.email,
                staff=user.is_superuser,
            )
            return
        self.stdout.write(
            f"{user.email} already belongs to {org.name!r}: already bootstrapped; "
            + ("; ".join(changes) or "nothing changed")
            + "."
        )

    def _created(
        self, result: Onboarding, password: str | None, *, queue: str | None, as_json: bool
    ) -> None:
        org, user = result.organization, result.user
        if as_json:
            payload: dict[str, Any] = {
                "created": True,
                "organization": org.name,
                "organization_id": str(org.id),
                "project_id": str(result.project.id),
                "email": user.email,
                "staff": user.is_superuser,
            }
            if password is not None:
                payload["password"] = password
            if result.raw_api_key is not None:
                payload["api_key"] = result.raw_api_key
            self._print_json(**payload)
            return
        self.stdout.write(self.style.SUCCESS(f"Created organization {org.name!r} ({org.slug})."))
        self.stdout.write(f"  admin:    {user.email}")
        if password is not None:
            self.stdout.write(f"  password: {password}  (generated; change it after logging in)")
        self.stdout.write(f"  project:  {result.project.name} ({result.project.id})")
        self.stdout.write(f"  queue:    {result.queue.name}")
        if queue and queue != result.queue.name:
            self.stdout.write(f"  queue:    {queue}")
        if result.raw_api_key is not None:
            self.stdout.write(f"  API key:  {result.raw_api_key}")
            self.stdout.write(
                self.style.WARNING("Store this API key now: it will not be shown again.")
            )

    def _print_json(self, **payload: Any) -> None:
        self.stdout.write(json.dumps(payload))


def _set_staff(org: Organization, user: User, *, staff: bool) -> None:
    User.objects.for_org(org).filter(pk=user.pk).update(is_staff=staff, is_superuser=staff)
    user.is_staff = user.is_superuser = staff


def _ensure_queue(project: Project, name: str, user: User) -> bool:
    """Create the queue unless the project has it; say whether it was created."""
    if Queue.objects.for_project(project).filter(name=name).exists():
        return False
    try:
        create_queue(project, name=name, actor=Actor(user=user))
    except QueueNameTaken:
        return False  # Created by a concurrent run since our check.
    except TaskForgeError as exc:
        raise CommandError(f"--queue {name}: {exc.message}") from exc
    return True
