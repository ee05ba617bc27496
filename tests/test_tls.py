"""
TLS end to end with certificates made by the test: a private certificate
authority signs the broker's and the gateway's certificate; HTTPS, secure
WebSockets and the gateway-to-broker PB link all run over TLS, and the
gateway refuses a broker whose certificate its trust roots do not vouch for.

Endpoints as an operator writes them: the broker listens on
C{ssl:PORT:privateKey=KEY:certKey=CERT}, the gateway serves HTTPS the same
way and reaches the broker with C{tls:HOST:PORT:trustRoots=DIR} (Twisted's
verifying client endpoint: the certificate must chain to a root in C{DIR}
and name C{HOST}).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import tempfile
import unittest
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_faults import ALICE, Deployment, Socket, fetch


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    path.chmod(0o600)
    return str(path)


def makeAuthority(folder: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """
    A certificate authority: its key, and its self-signed certificate in
    C{folder/NAME/ca.pem} (a trust-roots folder of one).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(_name(name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / name).mkdir()
    _write(folder / name / "ca.pem", certificate.public_bytes(serialization.Encoding.PEM))
    return key, certificate


def makeServerCertificate(folder: Path, authority: tuple[ec.EllipticCurvePrivateKey,
                                                         x509.Certificate]) -> tuple[str, str]:
    """
    A server certificate for C{localhost} and C{127.0.0.1}, signed by
    C{authority}: the paths of its key and of the certificate (with the
    authority's after it, the chain a server sends).
    """
    caKey, caCertificate = authority
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost")).issuer_name(caCertificate.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(caKey, hashes.SHA256())
    )
    keyPath = _write(folder / "server.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    certPath = _write(folder / "server.pem",
                      certificate.public_bytes(serialization.Encoding.PEM)
                      + caCertificate.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


class TLSTests(unittest.TestCase):
    """
    HTTPS, WSS and PB over TLS, with a private certificate authority.
    """

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pbgw-tls-"))
        self.addCleanup(shutil.rmtree, self.folder, True)
        authority = makeAuthority(self.folder, "authority")
        makeAuthority(self.folder, "stranger")
        self.key, self.cert = makeServerCertificate(self.folder, authority)
        self.context = ssl.create_default_context(cafile=str(self.folder / "authority/ca.pem"))
        self.listen = f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"

    def deployment(self, trusted: str) -> Deployment:
        return Deployment(
            self, pbListen=self.listen, httpListen=self.listen, scheme="https",
            brokerEndpoint=f"tls:localhost:{{port}}:trustRoots={self.folder / trusted}",
            gatewayArgs=["--connect-timeout", "5"],
        ).start()

    def test_endToEnd(self) -> None:
        """
        A client trusting the authority logs in over HTTPS and calls
        through the gateway and its TLS link to the broker; a secure
        WebSocket does the same and receives live updates; the broker's port
        speaks no plaintext PB, and a client that does not trust the
        authority cannot talk to the gateway.
        """
        deployment = self.deployment("authority")
        url = deployment.url
        self.assertEqual(fetch(url, "GET", "/readyz", context=self.context).status, 200)
        token = fetch(url, "POST", "/api/login", ALICE, context=self.context).body["token"]
        reply = fetch(url, "POST", "/api/call/add", [2, 3], token=token, context=self.context)
        self.assertEqual(reply.body, {"result": 5})

        self.assertTrue(deployment.wsURL.startswith("wss://"))
        ws = Socket(deployment.wsURL, ssl=self.context)
        self.addCleanup(ws.close)
        ws.call("rpc.login", {"token": token})
        self.assertEqual(ws.call("add", [4, 5]), 9)
        ws.call("stats")
        update = ws.notification("rpc.update", timeout=10)
        self.assertIn("seq", update["params"])

        with socket.create_connection(("127.0.0.1", deployment.pbPort), timeout=10) as raw:
            raw.settimeout(1.0)
            with self.assertRaises(TimeoutError):
                raw.recv(64)  # a plaintext broker would offer its dialects at once
        with self.assertRaises(ssl.SSLCertVerificationError):
            fetch(url, "GET", "/healthz", context=ssl.create_default_context())

    def test_untrustedBroker(self) -> None:
        """
        A gateway whose trust roots do not vouch for the broker's
        certificate refuses the link: logins (at once) and readiness answer
        503, and no login reaches the broker.
        """
        deployment = self.deployment("stranger")
        url = deployment.url
        reply = fetch(url, "POST", "/api/login", ALICE, context=self.context)
        self.assertEqual(reply.status, 503, reply)
        # At once, not after the connect timeout (5 s here).
        self.assertLess(reply.elapsed, 4.0)
        self.assertEqual(reply.body["error"]["type"], "broker_unavailable")
        self.assertNotIn(b"Traceback", reply.raw)
        self.assertEqual(fetch(url, "GET", "/readyz", context=self.context).status, 503)
        self.assertNotIn("logged in", deployment.broker.output())
