"""Replication, backups and their monitoring (README: Replicas, replication and backups)."""
