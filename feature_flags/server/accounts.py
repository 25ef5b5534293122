"""Who may use the service: console users (argon2 password hashes), API keys and console sessions.

All three live in the control-plane database next to the audit log, so every process serving
the console (and the CLI that manages users and keys) sees one set. Nothing secret is stored in
the clear: passwords as argon2id hashes, API keys and session tokens as SHA-256 digests (they are
256-bit random values, so a fast digest is enough and keeps the evaluation path cheap). Every
change is written to the audit log with the actor who made it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from polyshift.framework.control.state import ControlPlane
from polyshift.framework.core.errors import StoreError, UsageError

USER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,99}$")
KEY_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
MIN_PASSWORD = 12
KEY_PREFIX = "psk_"
SESSION_SECONDS = 12 * 3600


class Role(StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def can_write(self) -> bool:
        return self in (Role.EDITOR, Role.ADMIN)

    @property
    def can_admin(self) -> bool:
        return self is Role.ADMIN


class Scope(StrEnum):
    READ = "read"    # OFREP evaluation and reading flags
    ADMIN = "admin"  # also changes flags through the JSON API

    @property
    def can_write(self) -> bool:
        return self is Scope.ADMIN


_meta = sa.MetaData()
users = sa.Table(
    "polyshift_console_users", _meta,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
)
api_keys = sa.Table(
    "polyshift_api_keys", _meta,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("revoked_at", sa.String(40)),
    sa.Column("revoked_by", sa.String(200)),
)
sessions = sa.Table(
    "polyshift_console_sessions", _meta,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(100), nullable=False, index=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created_at: str
    created_by: str


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scope: Scope
    created_at: str
    created_by: str
    revoked_at: str | None = None
    revoked_by: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def actor(self) -> str:
        """How the audit log names a change made with this key."""
        return f"apikey:{self.name}"


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires: float


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# A hash of a password nobody has: checking it costs what checking a real user's password costs,
# so the time a failed sign-in takes does not tell whether the user exists.
_DUMMY_HASH: str | None = None


class Accounts:
    """Users, API keys and sessions in the control plane; changes audited there."""

    def __init__(self, state: ControlPlane) -> None:
        self.state = state
        self.engine = state.engine
        try:
            _meta.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"state database: cannot create the console's tables: {str(exc).splitlines()[0]}") from None

    def _fail(self, exc: SQLAlchemyError) -> StoreError:
        return StoreError(f"state database: {str(exc).splitlines()[0]}")

    # -- users ---------------------------------------------------------------------------
    def add_user(self, name: str, role: str, password: str, *, who: str) -> User:
        if not USER_NAME.match(name or ""):
            raise UsageError(f"user name {name!r} must be 1-100 characters of [a-z0-9_.@-], starting with a letter or digit")
        parsed = parse_role(role)
        if len(password) < MIN_PASSWORD:
            raise UsageError(f"the password must have at least {MIN_PASSWORD} characters")
        from argon2 import PasswordHasher

        user = User(name, parsed, _now(), who)
        try:
            with self.engine.begin() as conn:
                conn.execute(users.insert().values(name=name, role=parsed.value, password_hash=PasswordHasher().hash(password),
                                                   created_at=user.created_at, created_by=who))
        except IntegrityError:
            raise UsageError(f"user {name!r} already exists (remove it first to change it)") from None
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        self.state.audit("console.user_added", f"user:{name}", {"role": parsed.value}, who=who)
        return user

    def remove_user(self, name: str, *, who: str) -> None:
        try:
            with self.engine.begin() as conn:
                done = conn.execute(users.delete().where(users.c.name == name))
                conn.execute(sessions.delete().where(sessions.c.user == name))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        if done.rowcount != 1:
            raise UsageError(f"user {name!r} does not exist")
        self.state.audit("console.user_removed", f"user:{name}", {}, who=who)

    def list_users(self) -> list[User]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(users).order_by(users.c.name)).all()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        return [User(r.name, Role(r.role), r.created_at, r.created_by) for r in rows]

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None (in about the same time either way)."""
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        global _DUMMY_HASH
        hasher = PasswordHasher()
        try:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(users).where(users.c.name == name)).first()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        if row is None:
            if _DUMMY_HASH is None:
                _DUMMY_HASH = hasher.hash(secrets.token_urlsafe(16))
            try:
                hasher.verify(_DUMMY_HASH, password)
            except VerificationError:
                pass
            return None
        try:
            hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if hasher.check_needs_rehash(row.password_hash):  # parameters raised since it was set
            with self.engine.begin() as conn:
                conn.execute(users.update().where(users.c.name == name).values(password_hash=hasher.hash(password)))
        return User(row.name, Role(row.role), row.created_at, row.created_by)

    # -- API keys ------------------------------------------------------------------------
    def create_key(self, name: str, scope: str, *, who: str) -> tuple[ApiKey, str]:
        """A new key and its secret, which is shown once and stored only as a digest."""
        if not KEY_NAME.match(name or ""):
            raise UsageError(f"API key name {name!r} must be 1-100 characters of [a-z0-9_.-], starting with a letter or digit")
        parsed = parse_scope(scope)
        ident = secrets.token_hex(4)
        secret = f"{KEY_PREFIX}{ident}_{secrets.token_urlsafe(32)}"
        key = ApiKey(ident, name, parsed, _now(), who)
        try:
            with self.engine.begin() as conn:
                taken = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))).first()
                if taken is not None:
                    raise UsageError(f"an active API key named {name!r} exists (id {taken.id}); revoke it or pick another name")
                conn.execute(api_keys.insert().values(id=ident, name=name, scope=parsed.value, key_sha256=digest(secret),
                                                      created_at=key.created_at, created_by=who))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        self.state.audit("apikey.created", f"apikey:{name}", {"id": ident, "scope": parsed.value}, who=who)
        return key, secret

    def revoke_key(self, which: str, *, who: str) -> ApiKey:
        """Revoke the active key with this id or name."""
        try:
            with self.engine.begin() as conn:
                row = conn.execute(sa.select(api_keys).where(
                    sa.or_(api_keys.c.id == which, api_keys.c.name == which), api_keys.c.revoked_at.is_(None))).first()
                if row is None:
                    raise UsageError(f"no active API key has the id or name {which!r} (see 'polyshift apikeys list')")
                at = _now()
                conn.execute(api_keys.update().where(api_keys.c.id == row.id).values(revoked_at=at, revoked_by=who))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        self.state.audit("apikey.revoked", f"apikey:{row.name}", {"id": row.id}, who=who)
        return ApiKey(row.id, row.name, Scope(row.scope), row.created_at, row.created_by, at, who)

    def list_keys(self) -> list[ApiKey]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)).all()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        return [_key(r) for r in rows]

    def active_keys(self) -> dict[str, ApiKey]:
        """Active keys by the SHA-256 of their secret."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(api_keys).where(api_keys.c.revoked_at.is_(None))).all()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        return {r.key_sha256: _key(r) for r in rows}

    # -- sessions ------------------------------------------------------------------------
    def open_session(self, user: User, *, ttl: float = SESSION_SECONDS) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), time.time() + ttl)
        try:
            with self.engine.begin() as conn:
                conn.execute(sessions.delete().where(sessions.c.expires < time.time()))
                conn.execute(sessions.insert().values(token_sha256=digest(token), user=user.name, csrf=session.csrf,
                                                      expires=session.expires))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        return token, session

    def session(self, token: str) -> Session | None:
        """The live session of this cookie value; the user's role is read now, so a changed or removed
        user takes effect on their next request."""
        try:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(sessions, users.c.role, users.c.created_at, users.c.created_by)
                                   .join(users, users.c.name == sessions.c.user)
                                   .where(sessions.c.token_sha256 == digest(token))).first()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        if row is None or row.expires < time.time():
            return None
        return Session(User(row.user, Role(row.role), row.created_at, row.created_by), row.csrf, row.expires)

    def close_session(self, token: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(sessions.delete().where(sessions.c.token_sha256 == digest(token)))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None


def _key(row: sa.Row) -> ApiKey:  # type: ignore[type-arg]
    return ApiKey(row.id, row.name, Scope(row.scope), row.created_at, row.created_by, row.revoked_at, row.revoked_by)


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise UsageError(f"role {value!r} is not one of {', '.join(r.value for r in Role)}") from None


def parse_scope(value: str) -> Scope:
    try:
        return Scope(value)
    except ValueError:
        raise UsageError(f"API key scope {value!r} is not one of {', '.join(s.value for s in Scope)}") from None
