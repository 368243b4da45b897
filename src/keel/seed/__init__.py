"""Realistic fake users and posts, fast enough for millions: `keel seed`.

Rows are built in Python from pools of Faker text (Faker is slow per call, sampling
a pool is not) and written with PostgreSQL COPY in batches, all in one transaction,
so a failed run leaves nothing behind. `ANALYZE` runs at the end.

Every post belongs to its author's personal organization (`tenant_id` = the author's
id: a personal organization's id is its owner's). For benchmarks that need even tenants,
``tenants=N, posts_per_tenant=M`` makes N users whose personal organizations hold M
posts each.

Every seeded user signs in with the password ``seeded-password`` (`SEEDED_PASSWORD`):
it is hashed once and the hash shared, as a million argon2 hashes would take days.

Seeded rows carry a mark that `reset` relies on to delete them and nothing else:
their ids are UUIDv7 whose last 48 bits are `SEED_ID_TAG` (Keel's own ids are random
there, so one matches by chance once in 2**48), and seeded users also have
``metadata = {"seeded": true}``. Metadata alone would not be safe: users edit their
own. Deleting a seeded user deletes what it owns (posts, sessions) through the
foreign keys, as any account deletion does.

Benchmarks call `seed()` directly::

    report = await seed(url, passwords=PasswordHasher.from_settings(settings),
                        users=10_000, posts=1_000_000, seed=1)
"""

from keel.seed.fake import SEED_ID_TAG, SEEDED_PASSWORD, is_seeded_id, seeded_uuid7
from keel.seed.progress import ProgressCallback, rich_progress
from keel.seed.service import SeedError, SeedReport, seed

__all__ = [
    "SEEDED_PASSWORD",
    "SEED_ID_TAG",
    "ProgressCallback",
    "SeedError",
    "SeedReport",
    "is_seeded_id",
    "rich_progress",
    "seed",
    "seeded_uuid7",
]
