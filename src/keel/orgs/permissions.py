"""Who may do what in an organization: one `Permission` enum and one matrix.

Services check these (`OrgActor.require`); routers never do. The README's permission
table is generated from `MATRIX` (`matrix_markdown`) and a test keeps the two equal.
Two rules sit beside the matrix, in the members service: nobody grants, changes or
removes a role stronger than their own (so only owners touch owners), and an
organization always keeps at least one owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from uuid import UUID

import structlog

from keel.core.errors import Forbidden
from keel.core.viewer import Role, Viewer

log = structlog.get_logger(__name__)


class Permission(StrEnum):
    ORG_VIEW = "org.view"
    ORG_UPDATE = "org.update"
    ORG_DELETE = "org.delete"
    MEMBERS_VIEW = "members.view"
    MEMBERS_MANAGE = "members.manage"
    INVITATIONS_MANAGE = "invitations.manage"
    POSTS_READ = "posts.read"
    POSTS_CREATE = "posts.create"
    POSTS_EDIT_OWN = "posts.edit_own"
    POSTS_EDIT_ANY = "posts.edit_any"
    POSTS_PUBLISH = "posts.publish"
    POSTS_DELETE_OWN = "posts.delete_own"
    POSTS_DELETE_ANY = "posts.delete_any"
    DOCUMENTS_READ = "documents.read"
    DOCUMENTS_WRITE = "documents.write"
    DOCUMENTS_DELETE = "documents.delete"
    SEARCH = "search"
    IMPORTS_RUN = "imports.run"
    IMPORTS_VIEW = "imports.view"
    JOBS_VIEW = "jobs.view"


def _at_least(role: Role) -> frozenset[Role]:
    return frozenset(r for r in Role if r.rank >= role.rank)


OWNER, ADMIN, MEMBER, ANYONE = (_at_least(r) for r in Role)

# permission -> (the roles that hold it, what it allows)
MATRIX: Final[dict[Permission, tuple[frozenset[Role], str]]] = {
    Permission.ORG_VIEW: (ANYONE, "see the organization"),
    Permission.ORG_UPDATE: (ADMIN, "rename it, change its slug (settings)"),
    Permission.ORG_DELETE: (OWNER, "delete it (never a personal organization)"),
    Permission.MEMBERS_VIEW: (ANYONE, "list the members and their roles"),
    Permission.MEMBERS_MANAGE: (ADMIN, "change roles, remove members (up to their own role)"),
    Permission.INVITATIONS_MANAGE: (ADMIN, "invite (up to their own role), list, revoke"),
    Permission.POSTS_READ: (ANYONE, "read published posts"),
    Permission.POSTS_CREATE: (MEMBER, "write posts"),
    Permission.POSTS_EDIT_OWN: (MEMBER, "edit their own posts"),
    Permission.POSTS_EDIT_ANY: (ADMIN, "edit anyone's posts"),
    Permission.POSTS_PUBLISH: (MEMBER, "publish their own posts"),
    Permission.POSTS_DELETE_OWN: (MEMBER, "delete their own posts"),
    Permission.POSTS_DELETE_ANY: (ADMIN, "delete anyone's posts"),
    Permission.DOCUMENTS_READ: (ANYONE, "read documents"),
    Permission.DOCUMENTS_WRITE: (MEMBER, "add and change documents"),
    Permission.DOCUMENTS_DELETE: (ADMIN, "delete documents"),
    Permission.SEARCH: (ANYONE, "full-text, semantic and hybrid search"),
    Permission.IMPORTS_RUN: (ADMIN, "run bulk imports"),
    Permission.IMPORTS_VIEW: (ADMIN, "see the organization's import reports"),
    Permission.JOBS_VIEW: (ADMIN, "see the organization's jobs"),
}


def allows(role: Role, permission: Permission) -> bool:
    return role in MATRIX[permission][0]


@dataclass(frozen=True, slots=True)
class OrgActor:
    """The caller acting in one organization (the active organization of the request).

    `role` is None only for a platform admin acting in an organization they don't
    belong to. Platform admins hold every permission wherever they act: `keel.orgs.deps`
    logs their use of a non-member's organization, `require` their use beyond their role.
    """

    organization_id: UUID
    viewer: Viewer
    role: Role | None

    @property
    def user_id(self) -> UUID:
        return self.viewer.user_id

    @property
    def rank(self) -> int:
        """The caller's strength for the role rules; a platform admin counts as an owner."""
        if self.role is None or self.viewer.is_superuser:
            return Role.OWNER.rank
        return self.role.rank

    def may(self, permission: Permission) -> bool:
        return self.viewer.is_superuser or (self.role is not None and allows(self.role, permission))

    def require(self, permission: Permission) -> None:
        """Forbidden unless the role allows it; a platform admin may anyway, and it is logged."""
        if self.role is not None and allows(self.role, permission):
            return
        if not self.viewer.is_superuser:
            raise Forbidden(
                f"Your role in this organization does not allow this ({permission}).",
                permission=str(permission),
            )
        if self.role is not None:  # a member, beyond their role (non-members: logged by deps)
            log.warning(
                "orgs.admin_override",
                admin_id=str(self.viewer.user_id),
                organization_id=str(self.organization_id),
                permission=str(permission),
            )


def matrix_markdown() -> str:
    """The README's permission table, one row per permission, one column per role."""
    roles = list(Role)
    lines = [
        "| permission | " + " | ".join(roles) + " | allows |",
        "|---|" + "---|" * len(roles) + "---|",
    ]
    for permission, (holders, allows_what) in MATRIX.items():
        marks = " | ".join("✓" if role in holders else "" for role in roles)
        lines.append(f"| `{permission}` | {marks} | {allows_what} |")
    return "\n".join(lines)
