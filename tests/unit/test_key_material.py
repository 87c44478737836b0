"""Bearer secret format, checksum, hashing, hint, and signing key pairs."""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from service.domain import ids, key_material
from service.domain.ids import is_key_id, new_key_id


@pytest.mark.parametrize(("key_type", "prefix"), [("secret", "sk"), ("embed", "rk")])
@pytest.mark.parametrize("environment", ["live", "test"])
def test_secret_format(key_type: str, prefix: str, environment: str) -> None:
    secret = key_material.new_secret(key_type, environment)
    assert re.fullmatch(rf"{prefix}_{environment}_[0-9A-Za-z]{{49}}", secret)
    assert key_material.is_well_formed(secret)


def test_checksum_is_base62_crc32_of_the_head() -> None:
    secret = key_material.new_secret("secret", "live")
    head, crc = secret[:-6], secret[-6:]
    value = 0
    for char in crc:
        value = value * 62 + key_material.BASE62.index(char)
    assert value == zlib.crc32(head.encode())


def test_secrets_are_unique() -> None:
    assert len({key_material.new_secret("secret", "live") for _ in range(1000)}) == 1000


def test_a_changed_character_fails_the_checksum() -> None:
    secret = key_material.new_secret("secret", "live")
    tampered = secret[:20] + ("A" if secret[20] != "A" else "B") + secret[21:]
    assert not key_material.is_well_formed(tampered)


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "sk_live_",
        "sk_prod_" + "0" * 49,
        "pk_live_" + "0" * 49,
        "sk_live_" + "!" * 49,
        "sk_live_" + "0" * 48,
        "x" * 10_000,
    ],
)
def test_malformed_secrets_are_rejected(candidate: str) -> None:
    assert not key_material.is_well_formed(candidate)


def test_secret_hash_is_hmac_sha256_with_the_pepper() -> None:
    secret = key_material.new_secret("secret", "live")
    expected = hmac.new(b"pepper", secret.encode(), hashlib.sha256).hexdigest()
    assert key_material.secret_hash(b"pepper", secret) == expected
    assert key_material.secret_hash(b"other", secret) != expected


@pytest.mark.parametrize("pepper_length", [0, 1, 16, 32, 63, 64, 65, 200])
def test_secret_digest_is_the_standard_hmac(pepper_length: int) -> None:
    # secret_digest builds HMAC from precomputed SHA-256 states: pin it to hmac's.
    pepper = bytes(range(256))[:pepper_length]
    for _ in range(20):
        secret = key_material.new_secret("secret", "live")
        expected = hmac.digest(pepper, secret.encode(), "sha256")
        assert key_material.secret_digest(pepper, secret) == expected
        assert key_material.secret_hash(pepper, secret) == expected.hex()


@pytest.mark.parametrize("crc", [0, 1, 61, 62, 3843, 3844, 62**4 - 1, 62**4, 2**31, 2**32 - 1])
def test_checksum_digits_match_the_generic_base62(crc: int) -> None:
    assert key_material._crc_digits(crc) == key_material._base62(crc, 6)


def test_hint_shows_first_twelve_and_last_four() -> None:
    secret = key_material.new_secret("embed", "test")
    assert key_material.hint(secret) == secret[:12] + "…" + secret[-4:]


def test_ed25519_pair_signs_and_verifies() -> None:
    pair = key_material.new_signing_key_pair("ed25519")
    private = serialization.load_pem_private_key(pair.private_pem.encode(), password=None)
    public = serialization.load_pem_public_key(pair.public_pem.encode())
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    digest = hashlib.sha256(b"POST:/v1/x").digest()
    public.verify(private.sign(digest), digest)
    assert "PRIVATE KEY" in pair.private_pem and "PUBLIC KEY" in pair.public_pem


def test_rsa_pair_signs_pkcs1v15_sha256() -> None:
    pair = key_material.new_signing_key_pair("rsa-2048")
    private = serialization.load_pem_private_key(pair.private_pem.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    signature = private.sign(b"payload", padding.PKCS1v15(), hashes.SHA256())
    private.public_key().verify(signature, b"payload", padding.PKCS1v15(), hashes.SHA256())


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError):
        key_material.new_signing_key_pair("dsa")


def test_key_ids_are_ulids_and_sort_by_time() -> None:
    first, second = new_key_id(), new_key_id()
    assert is_key_id(first) and len(first) == 30
    assert first[:14] <= second[:14]
    assert not is_key_id("key_123") and not is_key_id("key_" + "I" * 26)


def _base62_digit_by_digit(value: int, width: int) -> str:
    """The plain definition: one base-62 digit per division."""
    digits = ""
    while value:
        value, digit = divmod(value, 62)
        digits = key_material.BASE62[digit] + digits
    return digits.rjust(width, "0")


@pytest.mark.parametrize(
    "value",
    [0, 1, 61, 62, 3843, 3844, 62**3, 62**42, 62**43 - 1, 2**256 - 1, 0x1234 << 200],
)
def test_base62_by_pairs_is_the_digit_by_digit_encoding(value: int) -> None:
    assert key_material._base62(value, 43) == _base62_digit_by_digit(value, 43)


def test_base62_refuses_a_value_wider_than_asked() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        key_material._base62(62**6, 6)
    assert key_material._base62(62**6 - 1, 6) == "z" * 6


def _ulid_one_character_at_a_time(value: int) -> str:
    """The plain definition: 26 Crockford characters of 5 bits, most significant first."""
    return "".join(ids.CROCKFORD[(value >> (5 * n)) & 31] for n in reversed(range(26)))


@pytest.mark.parametrize("random", [0, 1, 31, 1023, 2**80 - 1, 0x5A5A5A5A5A5A5A5A5A5A])
@pytest.mark.parametrize("millis", [0, 1, 1_767_225_600_000, 2**48 - 1])
def test_ulids_by_pairs_are_the_character_by_character_encoding(
    monkeypatch: pytest.MonkeyPatch, millis: int, random: int
) -> None:
    monkeypatch.setattr(ids.secrets, "randbits", lambda bits: random)
    expected = _ulid_one_character_at_a_time((millis << 80) | random)
    assert ids.new_ulid(millis) == expected
