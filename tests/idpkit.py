"""An identity provider for the gateway's tests: signing keys, tokens, and a JWKS served
over real HTTPS by a certificate of a certificate authority the test makes (and the
gateway trusts through ``CLARION_JWKS_CA_BUNDLE``).

* ``idp`` (fixture): an :class:`IdP` with its CA files in the test's tmp dir and
  its HTTPS server running; ``idp.rotate()``-style changes are plain assignments
  to ``idp.published`` (the kids served).
* :func:`raw_token`: a JWT assembled by hand, for what PyJWT refuses to sign
  (``alg: none``, an HS256 token keyed with a public key).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.server
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://idp.test.example/"
AUDIENCE = "clarion-gateway"
JWKS_PATH = "/.well-known/jwks.json"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_ca(directory: Path, name: str = "Clarion test CA") -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) PEM files; the server's
    certificate is for 127.0.0.1 and localhost, signed by the CA."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class IdP:
    """Keys by kid, the kids the JWKS publishes, and an HTTPS server publishing them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca, cert, key = make_ca(directory)
        self.keys: dict[str, PrivateKey] = {}
        self.published: list[str] = []
        #: GET requests the JWKS endpoint answered, and whether it answers 500 instead
        self.requests = 0
        self.failing = False
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                idp.requests += 1
                if self.path != JWKS_PATH or idp.failing:
                    self.send_error(404 if self.path != JWKS_PATH else 500)
                    return
                body = json.dumps(idp.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}{JWKS_PATH}"

    def settings(self, **overrides: str) -> dict[str, str]:
        """Gateway settings trusting this provider (and no HS256 secret)."""
        return {
            "CLARION_JWT_SECRET": "",
            "CLARION_JWKS_URL": self.url,
            "CLARION_JWKS_CA_BUNDLE": str(self.ca),
            "CLARION_JWT_ISSUER": ISSUER,
            "CLARION_JWT_AUDIENCE": AUDIENCE,
            "CLARION_JWKS_REFRESH_INTERVAL": "1",
            **overrides,
        }

    def add_key(self, kid: str, kind: str = "RSA", *, publish: bool = True) -> PrivateKey:
        key: PrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "RSA"
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.keys[kid] = key
        if publish:
            self.published.append(kid)
        return key

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            public = self.keys[kid].public_key()
            algorithm = "RS256" if isinstance(public, rsa.RSAPublicKey) else "ES256"
            jwk = json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(public))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": algorithm})
        return {"keys": keys}

    def public_pem(self, kid: str) -> bytes:
        return (
            self.keys[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(
        self,
        user: uuid.UUID | str,
        kid: str,
        *,
        ttl: float = 3600,
        header_kid: str | bool | None = True,
        **claims: Any,
    ) -> str:
        """A token signed by ``kid``'s key, with this provider's iss and aud unless given."""
        key = self.keys[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        body = {
            "sub": str(user),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": int(time.time() + ttl),
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        headers = {} if header_kid is False else {"kid": kid if header_kid is True else header_kid}
        return jwt.encode(body, key, algorithm=algorithm, headers=headers)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def raw_token(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT assembled by hand: HMAC-SHA256 with ``key``, or no signature when None."""
    signing_input = (
        _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    ).encode()
    signature = b"" if key is None else hmac.new(key, signing_input, hashlib.sha256).digest()
    return signing_input.decode() + "." + _b64(signature)


def claims_for(user: uuid.UUID | str, **extra: Any) -> dict[str, Any]:
    return {
        "sub": str(user),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time() + 3600),
        **extra,
    }


@pytest.fixture(name="idp")
def idp_fixture(tmp_path: Path) -> Iterator[IdP]:
    directory = tmp_path / "idp"
    directory.mkdir()
    idp = IdP(directory)
    yield idp
    idp.close()
