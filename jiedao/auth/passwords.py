"""Password hashing (argon2id) and the password policy for new users."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
MAX_LENGTH = 256

# argon2-cffi's defaults are RFC 9106's low-memory profile: argon2id, t=3, m=64 MiB, p=4.
_hasher = PasswordHasher(type=Type.ID)


def hasher() -> PasswordHasher:
    """The process-wide argon2id hasher (current cost parameters)."""
    return _hasher


def hash_password(password: str) -> str:
    """Hash ``password`` with argon2id and a fresh random salt."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches ``password_hash``; False on mismatch or a malformed hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than the current ones."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


def is_valid_hash(password_hash: str) -> bool:
    """True when ``password_hash`` is a well-formed argon2 hash (for imports of pre-hashed users)."""
    if not isinstance(password_hash, str) or not password_hash.startswith("$argon2"):
        return False
    try:
        extract_parameters(password_hash)
    except (InvalidHashError, ValueError):
        return False
    return True


def password_problem(password: str | None) -> str | None:
    """The reason ``password`` is not acceptable for a new user, or None when it is."""
    if password is None or password == "":
        return "密码不能为空"
    if not isinstance(password, str):
        return "密码必须是文本"
    if len(password) < MIN_LENGTH:
        return f"密码太短：至少需要 {MIN_LENGTH} 个字符"
    if len(password) > MAX_LENGTH:
        return f"密码太长：最多 {MAX_LENGTH} 个字符"
    if password.strip() == "":
        return "密码不能全是空白字符"
    return None


@lru_cache(maxsize=1)
def dummy_hash() -> str:
    """A hash of a random string, verified against when a username does not exist so that
    an unknown user costs as much time as a wrong password."""
    import secrets

    return _hasher.hash(secrets.token_urlsafe(16))
