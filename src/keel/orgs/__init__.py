"""Organizations (the tenants), memberships with roles, invitations, the active organization."""
