"""A throw-away PKI for a lab's etcd: one CA, a certificate per member, one client.

Made with the ``openssl`` command line (no Python crypto dependency), with
P-256 keys because they are quick to generate on a busy machine. Each member's
certificate names its IP address and allows both server and client use, so it
serves clients and authenticates to the other members (peer TLS). The client
certificate is what Warren nodes present (``WARREN_ETCD_CERT``/``_KEY``).
Keys are mode 0600 in a 0700 directory; it all goes away with the lab.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

DAYS = "7"
CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class PkiError(Exception):
    pass


def _openssl(directory: str, *args: str) -> None:
    if shutil.which("openssl") is None:
        raise PkiError("openssl is not installed (apt-get install openssl)")
    res = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=60)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise PkiError(f"openssl {args[0]} failed: {last}")


@dataclass(frozen=True)
class Pki:
    directory: str

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def make_ca(self, subject: str, name: str = "ca") -> None:
        _openssl(self.directory, "req", "-x509", *CURVE, "-days", DAYS, "-subj", f"/CN={subject}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-keyout", f"{name}.key", "-out", f"{name}.crt")
        os.chmod(self.path(f"{name}.key"), 0o600)

    def make_cert(self, name: str, subject: str, san: str | None, usage: str, ca: str = "ca") -> None:
        """``name.crt``/``name.key`` signed by ``ca``; ``usage``: serverAuth,clientAuth..."""
        _openssl(self.directory, "req", "-new", *CURVE, "-subj", f"/CN={subject}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr")
        os.chmod(self.path(f"{name}.key"), 0o600)
        ext = [f"extendedKeyUsage={usage}", "keyUsage=critical,digitalSignature,keyEncipherment",
               "basicConstraints=CA:FALSE"]
        if san:
            ext.append(f"subjectAltName={san}")
        with open(self.path(f"{name}.ext"), "w") as f:
            f.write("\n".join(ext) + "\n")
        _openssl(self.directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt",
                 "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", DAYS,
                 "-extfile", f"{name}.ext", "-out", f"{name}.crt")
        for leftover in (f"{name}.csr", f"{name}.ext"):
            os.unlink(self.path(leftover))


def make_lab_pki(directory: str, lab: str, members: dict[str, str]) -> Pki:
    """CA ``ca``, ``<member>.crt/.key`` for each ``{member: ipv4}``, and ``client.crt/.key``."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    pki = Pki(directory)
    pki.make_ca(f"warren-lab {lab} etcd CA")
    for member, ipv4 in members.items():
        pki.make_cert(member, f"{lab}-{member}", f"IP:{ipv4}", "serverAuth,clientAuth")
    pki.make_cert("client", "warren-node", None, "clientAuth")
    return pki
