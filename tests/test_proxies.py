"""
Tests for L{gateway.proxies}: whose C{X-Forwarded-For} is believed, and
which address in it is the client's.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from gateway.proxies import TrustedProxies, parseNetworks


class ParseTests(TestCase):
    def test_addressesAndNetworks(self) -> None:
        networks = parseNetworks(["10.0.0.5", "172.16.0.0/12", "::1", "10.1.2.3/8"])
        self.assertEqual([str(n) for n in networks],
                         ["10.0.0.5/32", "172.16.0.0/12", "::1/128", "10.0.0.0/8"])

    def test_garbage(self) -> None:
        error = self.assertRaises(ValueError, parseNetworks, ["10.0.0.0/8", "nginx"])
        self.assertIn("'nginx' is not an address or a network", str(error))


class ClientAddressTests(TestCase):
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])

    def test_noProxiesTrusted(self) -> None:
        """
        With no trusted proxies the header is never read.
        """
        none = TrustedProxies([])
        self.assertFalse(none)
        self.assertEqual(none.clientAddress("127.0.0.1", [b"203.0.113.9"]), "127.0.0.1")

    def test_untrustedPeer(self) -> None:
        """
        A client that is not a trusted proxy cannot claim another address.
        """
        self.assertEqual(self.proxies.clientAddress("198.51.100.4", [b"203.0.113.9"]),
                         "198.51.100.4")

    def test_noHeader(self) -> None:
        self.assertEqual(self.proxies.clientAddress("127.0.0.1", None), "127.0.0.1")
        self.assertEqual(self.proxies.clientAddress("127.0.0.1", []), "127.0.0.1")

    def test_rightmostUntrusted(self) -> None:
        """
        The rightmost address that is not a trusted proxy is the client's;
        what a client wrote further left is ignored.
        """
        self.assertEqual(
            self.proxies.clientAddress("127.0.0.1", [b"1.2.3.4, 203.0.113.9, 10.0.0.7"]),
            "203.0.113.9",
        )
        self.assertEqual(
            self.proxies.clientAddress("127.0.0.1", [b"1.2.3.4", b"203.0.113.9"]),
            "203.0.113.9",
        )

    def test_allTrusted(self) -> None:
        self.assertEqual(self.proxies.clientAddress("127.0.0.1", [b"10.0.0.9, 10.0.0.7"]),
                         "10.0.0.9")

    def test_forms(self) -> None:
        """
        Ports, brackets and IPv4-mapped IPv6 addresses are read.
        """
        self.assertEqual(self.proxies.clientAddress("127.0.0.1", ["203.0.113.9:5555"]),
                         "203.0.113.9")
        self.assertEqual(self.proxies.clientAddress("127.0.0.1", ["[2001:db8::1]:443"]),
                         "2001:db8::1")
        self.assertEqual(self.proxies.clientAddress("127.0.0.1", ["2001:db8::2"]),
                         "2001:db8::2")
        self.assertEqual(self.proxies.clientAddress("::ffff:127.0.0.1", ["203.0.113.9"]),
                         "203.0.113.9")

    def test_garbageStopsTheWalk(self) -> None:
        """
        An entry that is not an address ends the walk at the last trusted
        hop: nothing written left of it is believed.
        """
        self.assertEqual(self.proxies.clientAddress("127.0.0.1", [b"203.0.113.9, unknown"]),
                         "127.0.0.1")
        self.assertEqual(
            self.proxies.clientAddress("127.0.0.1", [b"203.0.113.9, junk, 10.0.0.7"]),
            "10.0.0.7",
        )
        self.assertEqual(self.proxies.clientAddress("127.0.0.1", [b"\xff\xfe"]), "127.0.0.1")
