"""Which bundles a server may serve: a pinned digest, or a signature by a trusted key.

The digest makes a bundle tamper-evident, but anyone who can write a bundle can compute a new digest for it;
the golden self-test catches an edit unless its golden files were forged with it. Neither says *who* made
the bundle. A signature does: ``qpolicy ship --signing-key KEY`` (or ``qpolicy sign``) writes
``signature.json`` beside ``bundle.json``, an Ed25519 signature (the ``cryptography`` library) over the
bundle's digest, which covers ``bundle.json`` (without its provenance) and, through the SHA-256 of each,
every file the function uses. A server given ``--trusted-key PUB.pem`` (or ``--expected-digest HEX``)
refuses every other bundle right after the digest check, before its arrays are read, anything is compiled,
or an action is served.

Why not OpenSSF model-signing: it signs every file in the folder, so anything a user adds beside a bundle
(the FPGA overlay on the board, ``evaluation.json`` written by ``ship``) breaks the signature, and it brings
sigstore's dependency tree to a board that runs numpy alone; the digest already names every file that
matters. ``cryptography`` is imported only when a key is used.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from qpolicy_hw.bundle_files import regular_file
from qpolicy_hw.bundle_schema import DIGEST
from qpolicy_hw.errors import BundleError, QpolicyError

SIGNATURE_FILE = "signature.json"
SCHEME = "ed25519-over-digest/1"
_CONTEXT = b"qpolicy.bundle-signature/1\n"   # signed together with the digest: a signature means only this
MAX_SIGNATURE_BYTES = 4096
MAX_KEY_BYTES = 16384


def _message(digest: str) -> bytes:
    return _CONTEXT + digest.encode("ascii")


def _read_pem(path: str | Path, what: str) -> bytes:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_KEY_BYTES:
            raise QpolicyError(f"{what} {p}: larger than a key file can be")
        return p.read_bytes()
    except OSError as exc:
        raise QpolicyError(f"{what} {p}: {exc.strerror or exc}") from None


def load_public_key(path: str | Path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(_read_pem(path, "trusted key"))
    except ValueError as exc:
        raise QpolicyError(f"trusted key {path}: not a PEM public key ({str(exc)[:80]})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise QpolicyError(f"trusted key {path}: not an Ed25519 key")
    return key


def load_private_key(path: str | Path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(_read_pem(path, "signing key"), password=None)
    except (ValueError, TypeError) as exc:
        raise QpolicyError(f"signing key {path}: not an unencrypted PEM private key ({str(exc)[:80]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise QpolicyError(f"signing key {path}: not an Ed25519 key")
    return key


def key_id(public_key) -> str:
    """The first 16 hex digits of the SHA-256 of the raw public key: names the key in messages."""
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def generate_key_pair(private_path: str | Path, public_path: str | Path) -> str:
    """A new Ed25519 key pair as PEM files (the private one readable by its owner only); returns its key id.
    Existing files are never overwritten."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    private_path, public_path = Path(private_path), Path(public_path)
    for p in (private_path, public_path):
        if p.exists():
            raise QpolicyError(f"{p} exists; keys are never overwritten")
    key = Ed25519PrivateKey.generate()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public_path.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return key_id(key.public_key())


def sign_bundle(bundle_dir: str | Path, private_key_path: str | Path, digest: str) -> Path:
    """Write ``signature.json`` for the bundle whose (verified) digest is ``digest``."""
    key = load_private_key(private_key_path)
    signature = key.sign(_message(digest))
    out = Path(bundle_dir) / SIGNATURE_FILE
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"scheme": SCHEME, "key_id": key_id(key.public_key()), "digest": digest,
                               "signature": signature.hex()}, indent=2) + "\n")
    os.replace(tmp, out)
    return out


@dataclass(frozen=True)
class TrustPolicy:
    """What a server accepts: bundles signed by one of ``trusted_keys`` (PEM paths), and/or the one bundle
    whose digest is ``expected_digest``. Empty: any bundle whose digest and self-test hold."""

    trusted_keys: tuple[str, ...] = field(default=())
    expected_digest: str | None = None

    def __post_init__(self):
        if self.expected_digest is not None:
            d = self.expected_digest.strip().lower()
            if not DIGEST.fullmatch(d):
                raise QpolicyError(f"expected digest {self.expected_digest[:80]!r}: give the 64 hex digits "
                                   "`qpolicy verify BUNDLE` prints")
            object.__setattr__(self, "expected_digest", d)
        for path in self.trusted_keys:
            load_public_key(path)   # a bad key file is refused now, not when a bundle arrives

    @property
    def active(self) -> bool:
        return bool(self.trusted_keys) or self.expected_digest is not None

    def check(self, root: Path, digest: str) -> None:
        """Refuse (BundleError, one line) a bundle this policy does not accept."""
        if self.expected_digest is not None and digest != self.expected_digest:
            raise BundleError(f"{root}: digest {digest[:16]}... is not the expected {self.expected_digest[:16]}...; "
                              "refused before anything is compiled or served")
        if not self.trusted_keys:
            return
        from cryptography.exceptions import InvalidSignature

        try:
            sig = json.loads(regular_file(root, SIGNATURE_FILE, MAX_SIGNATURE_BYTES).decode("utf-8"))
            signature = bytes.fromhex(sig["signature"])
            if sig.get("scheme") != SCHEME:
                raise ValueError(f"scheme {str(sig.get('scheme'))[:40]!r}")
        except BundleError as exc:
            raise BundleError(f"{root}: unsigned bundle ({str(exc).split(': ', 1)[-1]}); a trusted key is "
                              "required: sign it with `qpolicy sign` or `qpolicy ship --signing-key`") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"{root}: {SIGNATURE_FILE} is malformed ({type(exc).__name__})") from None
        for path in self.trusted_keys:
            try:
                load_public_key(path).verify(signature, _message(digest))
                return
            except InvalidSignature:
                continue
        raise BundleError(f"{root}: the signature does not verify with any trusted key for digest {digest[:16]}... "
                          "(changed after signing, or signed by another key)")
