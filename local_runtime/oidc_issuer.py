"""An OpenID Connect issuer on a loopback port, in place of a Cognito user pool for the JWT authorizer (ApiAuthorizer
JWT) off AWS: its discovery document (``/.well-known/openid-configuration``) and its signing keys (``jwks_uri``), the
public half of an RSA key made when it starts, and the tokens it signs with that key. Plain http, as the template
lets a loopback issuer be. The end-to-end tests and bench.cold_start point JwtIssuer at one."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_ID = "local-issuer"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Issuer(ThreadingHTTPServer):
    """Serves from a thread of its own once made (port 0: a free port the system picks, no race for it)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.key = new_key()
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.documents: dict[str, dict[str, Any]] = {
            "/.well-known/openid-configuration": {"issuer": self.url, "jwks_uri": f"{self.url}/keys"},
            "/keys": {"keys": [public | {"kid": KEY_ID, "alg": "RS256", "use": "sig"}]},
        }
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def sign(self, claims: dict[str, Any], key: rsa.RSAPrivateKey | None = None) -> str:
        """A token of these claims, signed RS256 under the issuer's key id: with its key unless told another."""
        return jwt.encode(claims, key or self.key, "RS256", headers={"kid": KEY_ID})

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: Issuer

    def do_GET(self) -> None:
        document = self.server.documents.get(self.path)
        if document is None:
            self.send_error(404)
            return
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass
