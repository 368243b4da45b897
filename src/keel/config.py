"""Keel's settings: one pydantic-settings class, read from the environment and `.env`."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "testing", "production"]

# Values people paste from examples; production refuses them.
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "change_me", "changethis", "secret", "please-change-me"}
)
MIN_SECRET_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 16
SECRET_FILE_NAME = "secret_key"  # noqa: S105 - a file name, not a secret


class Settings(BaseSettings):
    """Everything Keel can be configured with. Field names map to upper-case env vars."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # --- runtime -----------------------------------------------------------
    app_name: str = "Keel"
    environment: Environment = "development"
    data_dir: Path = Field(
        default=Path(".keel"), validation_alias=AliasChoices("KEEL_DATA_DIR", "data_dir")
    )
    secret_key: SecretStr | None = None
    log_level: str = "INFO"
    log_json: bool | None = None  # None: JSON unless stdout is a terminal

    # --- database ----------------------------------------------------------
    database_url: str | None = None  # unset: the embedded PostgreSQL under data_dir
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    db_pool_timeout: Annotated[float, Field(gt=0)] = 10.0
    db_pool_recycle: Annotated[int, Field(ge=60)] = 1800
    db_statement_timeout_ms: Annotated[int, Field(ge=0)] = 30_000
    db_connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    # Safe-method requests read through their own asyncpg pool (one round trip per read).
    db_read_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    # Signed-in callers resolved from their token, cached per worker; NOTIFY evicts them.
    viewer_cache_size: Annotated[int, Field(ge=0)] = 10_000
    viewer_cache_ttl_seconds: Annotated[float, Field(ge=0)] = 60.0
    token_cache_size: Annotated[int, Field(ge=0)] = 10_000
    auto_migrate: bool = Field(
        default=True, validation_alias=AliasChoices("KEEL_AUTO_MIGRATE", "auto_migrate")
    )

    # --- cache -------------------------------------------------------------
    redis_url: str | None = None

    # --- http ----------------------------------------------------------------
    docs_enabled: bool | None = None  # /docs, /redoc, /openapi.json; None: not in production
    # Bearer token /metrics requires; production without one keeps /metrics closed (401).
    metrics_token: SecretStr | None = None
    cors_origins: Annotated[list[str], NoDecode] = []
    # Let allowed origins send cookies/HTTP auth. Never with CORS_ORIGINS=*: that is refused.
    cors_allow_credentials: bool = True
    allowed_hosts: Annotated[list[str], NoDecode] = ["localhost", "127.0.0.1"]
    hsts: bool = False  # also send HSTS on plain HTTP (e.g. TLS ends at a proxy)
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    # How deeply any JSON body (NDJSON included) may nest arrays and objects; deeper: 422.
    max_json_depth: Annotated[int, Field(ge=2, le=200)] = 32
    # The request line and header fields `keel serve` reads; past either cap: 431, closed.
    max_header_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024
    max_header_count: Annotated[int, Field(ge=16)] = 100
    # A request body that stops arriving for this long is answered 408 (uploads included).
    body_read_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    # How long a stored answer to an `Idempotency-Key` is replayed (then the key is free).
    idempotency_key_hours: Annotated[int, Field(ge=1, le=24 * 30)] = 24
    shutdown_grace_seconds: Annotated[int, Field(ge=0)] = 20

    # --- identity --------------------------------------------------------------
    # Retired signing keys still verify until removed from this list (key rotation).
    previous_secret_keys: Annotated[list[SecretStr], NoDecode] = []
    jwt_issuer: str = "keel"
    jwt_audience: str = "keel-api"
    access_token_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 15
    refresh_token_days: Annotated[int, Field(ge=1, le=365)] = 14
    password_reset_minutes: Annotated[int, Field(ge=5)] = 30
    verify_email_hours: Annotated[int, Field(ge=1)] = 48
    signup_enabled: bool = True
    # Sign-up that never reveals a registered email: 202 and a mail either way, the
    # account created when the address confirms it (README: Security).
    signup_enumeration_safe: bool = False
    # argon2id cost; the defaults are OWASP's minimum (19 MiB, 2 passes, 1 lane).
    argon2_memory_kib: Annotated[int, Field(ge=19_456)] = 19_456
    argon2_time_cost: Annotated[int, Field(ge=2)] = 2
    argon2_parallelism: Annotated[int, Field(ge=1)] = 1
    first_superuser_email: str | None = None
    first_superuser_username: str | None = None
    first_superuser_password: SecretStr | None = None

    # --- rate limits (`limits` syntax: "5/15 minutes") ---------------------------
    rate_limit_enabled: bool = True
    # Failed password checks (sign-in, password change, email change): per account, then
    # per client IP. Successes reset the account's count and never count against the IP.
    rate_limit_login: str = "5/15 minutes"
    rate_limit_login_ip: str = "100/15 minutes"
    # Reset, verification and sign-up mails and email-change notices, per address and
    # kind; past it, requests get the same answer and send nothing.
    rate_limit_mail: str = "3/hour"
    rate_limit_user: str = "600/minute"
    rate_limit_anonymous: str = "120/minute"

    # --- mail (unset SMTP_HOST: mail goes to the log) -------------------------------
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    mail_from: str = "Keel <no-reply@localhost>"
    public_base_url: str = "http://127.0.0.1:8000"

    # --- posts & search --------------------------------------------------------
    # Text-search configuration baked into app.posts.search by the migration; set it
    # before the first `keel migrate`, changing it later needs a new migration.
    search_config: Annotated[str, Field(pattern=r"^[a-z_]{1,63}$")] = "english"

    # --- bulk import (`/orgs/{org_id}/imports/*`, `/admin/import/users`, `keel import`) --
    # How posts land: `merge` (MERGE ... RETURNING), `upsert` (INSERT ... ON CONFLICT ...
    # RETURNING, which Citus supports), or `auto`: upsert when the `citus` extension is
    # installed in the database, else merge. Both give the same reports.
    import_strategy: Literal["auto", "merge", "upsert"] = "auto"
    import_max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024  # HTTP body cap
    import_json_max_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024 * 1024  # parsed whole
    import_max_rows: Annotated[int, Field(ge=1)] = 1_000_000  # HTTP row cap
    import_max_line_bytes: Annotated[int, Field(ge=1024)] = 1_048_576  # one CSV/NDJSON record
    import_batch_rows: Annotated[int, Field(ge=100, le=100_000)] = 5_000  # rows per COPY
    import_hash_workers: Annotated[int, Field(ge=1, le=64)] | None = None  # None: CPU count
    import_max_reported_rejections: Annotated[int, Field(ge=1)] = 1_000
    import_statement_timeout_ms: Annotated[int, Field(ge=0)] = 600_000
    # Heavy operations (imports, document bulk loads) at once: per caller (429 past it)
    # and per process (503 past it). Each holds a spooled body or a parsed JSON document.
    heavy_operations_per_user: Annotated[int, Field(ge=1)] = 2
    heavy_operations_per_process: Annotated[int, Field(ge=1)] = 4

    # --- vectors (`/documents`) ------------------------------------------------
    # Baked into app.documents by the migration, like search_config: set them before the
    # first `keel migrate`; changing them later needs a new migration.
    embedding_dimension: Annotated[int, Field(ge=1, le=4000)] = 384  # all-MiniLM-L6-v2
    vector_metric: Literal["cosine", "l2", "inner_product", "l1"] = "cosine"  # the HNSW opclass
    # Which HNSW index to build: on the full-precision `embedding`, on its half-precision
    # copy `embedding_half` (half the size; hits are re-ranked at full precision), or both.
    vector_index: Literal["vector", "halfvec", "both"] = "halfvec"
    hnsw_m: Annotated[int, Field(ge=2, le=100)] = 16
    hnsw_ef_construction: Annotated[int, Field(ge=4, le=1000)] = 64  # at least 2 * hnsw_m
    # Per query: the HNSW candidate list, and how far an iterative (filtered) scan may go.
    # 100: the smallest that reached recall@10 >= 0.95 on 100k documents (bench/vectors.py).
    hnsw_ef_search_default: Annotated[int, Field(ge=1, le=1000)] = 100
    hnsw_max_scan_tuples: Annotated[int, Field(ge=1)] = 20_000
    vector_search_max_limit: Annotated[int, Field(ge=1, le=1000)] = 100
    documents_bulk_max_rows: Annotated[int, Field(ge=1)] = 10_000
    documents_bulk_max_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024

    # --- text embeddings and the job worker -----------------------------------------
    # "minilm": all-MiniLM-L6-v2 in-process (384 dimensions, CPU, no download); "http": an
    # OpenAI-compatible /embeddings service (EMBEDDINGS_URL, EMBEDDINGS_MODEL; its vectors
    # must have EMBEDDING_DIMENSION floats).
    embedder: Literal["minilm", "http"] = "minilm"
    embeddings_url: str | None = None
    embeddings_model: str | None = None
    embeddings_api_key: SecretStr | None = None
    embeddings_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    # BLAS threads of the in-process model. 1 keeps background embedding off the other
    # core (OpenBLAS threads spin and collapse beside busy processes); unset: all cores.
    embedding_threads: Annotated[int, Field(ge=1, le=64)] | None = 1
    worker_enabled: bool = True  # `keel serve` runs a job worker in each API process
    worker_poll_seconds: Annotated[float, Field(gt=0)] = 1.0
    worker_batch: Annotated[int, Field(ge=1, le=100)] = 4  # jobs claimed at once
    job_lease_seconds: Annotated[int, Field(ge=10)] = 300  # then a running job is re-queued
    # Hybrid search: reciprocal rank fusion, score = sum(weight / (RRF_K + rank)).
    hybrid_rrf_k: Annotated[int, Field(ge=1, le=1000)] = 60
    hybrid_candidates: Annotated[int, Field(ge=10, le=1000)] = 100  # per ranking

    # --- admin insight (`/admin/stats/daily`, `/admin/explain/*`) ----------------
    stats_max_days: Annotated[int, Field(ge=1, le=3660)] = 366  # longest daily-stats range
    # Parallel workers per Gather for the daily stats (SET LOCAL, that transaction only).
    stats_parallel_workers: Annotated[int, Field(ge=0, le=64)] = 4

    # --- database insight (`/api/v1/admin/db/*`, `/admin/db`, `keel db insight`) ----
    # Every insight statement runs under this statement_timeout (SET LOCAL).
    insight_statement_timeout_ms: Annotated[int, Field(ge=100, le=60_000)] = 3000
    # Overview thresholds: a query running, or a transaction idle, longer than these.
    insight_long_query_seconds: Annotated[float, Field(gt=0)] = 60.0
    insight_idle_in_transaction_seconds: Annotated[float, Field(gt=0)] = 60.0
    # Unused indexes smaller than this are not worth a warning.
    insight_unused_index_min_bytes: Annotated[int, Field(ge=0)] = 1_048_576
    # A replication slot holding back more WAL than this is a warning.
    insight_slot_wal_warning_bytes: Annotated[int, Field(ge=0)] = 1_073_741_824
    # Query-stats and space snapshots (job queue): how often, and how long they are kept.
    insight_snapshot_minutes: Annotated[int, Field(ge=0, le=1440)] = 15  # 0: no snapshots
    insight_snapshot_retention_days: Annotated[int, Field(ge=1, le=3660)] = 14
    # /metrics database figures: collected at scrape time, cached, with a short timeout.
    insight_metrics_enabled: bool = True
    insight_metrics_cache_seconds: Annotated[float, Field(ge=0, le=300)] = 5.0
    insight_metrics_timeout_ms: Annotated[int, Field(ge=50, le=10_000)] = 500
    # The database server's RAM and CPUs for settings advice (unset: this machine's,
    # right for the embedded server; set them for an external one).
    insight_server_memory_mb: Annotated[int | None, Field(ge=256)] = None
    insight_server_cpus: Annotated[int | None, Field(ge=1)] = None
    # --- replicas, replication and backups (README: Replicas, replication and backups) ---
    # Streaming replicas that safe-method requests read from (comma-separated URLs); with
    # the embedded server, the replicas of `keel db replica add` are used as well.
    database_replica_urls: Annotated[list[str], NoDecode] = []
    replica_max_lag_ms: Annotated[int, Field(ge=0)] = 1_000  # further behind: read the primary
    replica_check_interval_ms: Annotated[int, Field(ge=10)] = 200  # health and lag checks
    # A replica read slower than this is answered by the primary instead (replica held out 5 s).
    replica_read_timeout_ms: Annotated[int, Field(ge=10)] = 1_000
    # How long a client's reads wait for replicas to replay its last write (`keel_lsn` cookie).
    replica_read_your_writes_seconds: Annotated[int, Field(ge=1)] = 300
    # `keel db backup` keeps this many full chains in KEEL_DATA_DIR/backups; older ones and
    # the archived WAL only they need are deleted.
    backup_keep_full: Annotated[int, Field(ge=1)] = 2
    # --- organizations (`/orgs`) ----------------------------------------------
    org_invitation_hours: Annotated[int, Field(ge=1, le=24 * 90)] = 72  # then it expires

    # --- health --------------------------------------------------------------
    ready_timeout_seconds: Annotated[float, Field(gt=0)] = 2.0
    min_free_disk_mb: Annotated[int, Field(ge=0)] = 256

    # --- deployment (deploy/gunicorn.conf.py, `keel check`) ----------------------
    # gunicorn worker processes; unset: one per CPU (async workers, not the sync 2n+1 rule).
    web_concurrency: Annotated[int, Field(ge=1, le=64)] | None = None
    # A worker is recycled after this many requests (plus up to 10% jitter); 0: never.
    max_requests_per_worker: Annotated[int, Field(ge=0)] = 10_000
    # DATABASE_URL points at PgBouncer in transaction pooling mode: asyncpg's and
    # SQLAlchemy's prepared-statement caches are off (PgBouncer < 1.21 can't keep named
    # statements), and no startup parameters beyond application_name are sent (set
    # statement_timeout and jit on the role instead). README "Deploying: PgBouncer".
    db_pgbouncer: bool = False
    # The server itself, bypassing PgBouncer: the viewer-cache LISTEN needs a session.
    database_direct_url: str | None = None

    @field_validator(
        "cors_origins",
        "allowed_hosts",
        "previous_secret_keys",
        "database_replica_urls",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("database_replica_urls")
    @classmethod
    def _normalise_replica_urls(cls, value: list[str]) -> list[str]:
        return [url for url in map(cls._normalise_database_url, value) if url is not None]

    @field_validator("database_url", "database_direct_url")
    @classmethod
    def _normalise_database_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value.removeprefix(prefix)
        raise ValueError("DATABASE_URL must start with postgresql:// or postgresql+asyncpg://")

    @model_validator(mode="after")
    def _require_real_secret(self) -> Settings:
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if self.environment == "production" and (
            key.lower() in PLACEHOLDER_SECRETS or len(key) < MIN_SECRET_LENGTH
        ):
            raise ValueError(
                "SECRET_KEY is missing or a placeholder; production needs a random value of at "
                f"least {MIN_SECRET_LENGTH} characters (python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))')"
            )
        return self

    @field_validator("metrics_token")
    @classmethod
    def _long_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < MIN_METRICS_TOKEN_LENGTH:
            raise ValueError(f"must be at least {MIN_METRICS_TOKEN_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _refuse_credentialed_wildcard(self) -> Settings:
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ValueError(
                "CORS_ORIGINS=* with CORS_ALLOW_CREDENTIALS=true would let any website make "
                "requests with your users' credentials; list the allowed origins, or set "
                "CORS_ALLOW_CREDENTIALS=false"
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def serves_docs(self) -> bool:
        """Whether /docs, /redoc and /openapi.json are served: opt-in in production."""
        return self.docs_enabled if self.docs_enabled is not None else not self.is_production

    def resolved_secret_key(self) -> str:
        """The signing secret: configured, or (outside production) kept in the data dir."""
        if self.secret_key and self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value()
        if self.environment == "testing":
            return _ephemeral_secret()
        return _persisted_dev_secret(self.data_dir)


@lru_cache(maxsize=1)
def _ephemeral_secret() -> str:
    return secrets.token_urlsafe(48)


def _persisted_dev_secret(data_dir: Path) -> str:
    path = data_dir / SECRET_FILE_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        # O_EXCL: two processes starting at once agree on the first one's secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
