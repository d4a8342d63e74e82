"""A loopback OIDC identity provider for the compatibility tests.

An OIDC provider cannot run on the CI machine, so this stand-in speaks the protocol the
Feast SDK and feast-rs use: the discovery document, a JWKS with one RS256 key generated
per run, and a token endpoint for the client-credentials and password grants. Tokens carry
`iss`, `aud`, `exp`, `preferred_username` and top-level `roles`.
"""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

AUDIENCE = "feast"
LIFETIME_SECONDS = 300


class Issuer:
    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"k-{uuid.uuid4().hex[:8]}"
        self.clients = {}  # client_id -> (secret, username, roles)
        self.users = {}  # username -> (password, roles)
        self.token_requests = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    self._json(200, issuer.discovery())
                elif self.path == "/jwks":
                    self._json(200, issuer.jwks())
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self):
                if self.path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                status, body = issuer.grant(form)
                self._json(status, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def discovery_url(self):
        return f"{self.url}/.well-known/openid-configuration"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def discovery(self):
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/jwks",
            "token_endpoint": f"{self.url}/token",
            "authorization_endpoint": f"{self.url}/auth",
        }

    def jwks(self):
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        return {"keys": [jwk]}

    def add_client(self, client_id, secret, username=None, roles=()):
        self.clients[client_id] = (secret, username or client_id, list(roles))

    def add_user(self, username, password, roles=()):
        self.users[username] = (password, list(roles))

    def token(self, username, roles=(), lifetime=LIFETIME_SECONDS, **extra):
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + lifetime,
            "sub": username,
            "preferred_username": username,
            "roles": list(roles),
            **extra,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def grant(self, form):
        self.token_requests += 1
        client = self.clients.get(form.get("client_id", ""))
        if client is None or client[0] != form.get("client_secret"):
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") == "client_credentials":
            username, roles = client[1], client[2]
        elif form.get("grant_type") == "password":
            user = self.users.get(form.get("username", ""))
            if user is None or user[0] != form.get("password"):
                return 400, {"error": "invalid_grant"}
            username, roles = form["username"], user[1]
        else:
            return 400, {"error": "unsupported_grant_type"}
        token = self.token(username, roles, azp=form["client_id"])
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": LIFETIME_SECONDS}


if __name__ == "__main__":
    # For benchmarks: serve until killed; print the discovery URL and an hour-long token of
    # the user `bench` with the role `reader`, one per line.
    import sys

    issuer = Issuer()
    print(issuer.discovery_url)
    print(issuer.token("bench", ["reader"], lifetime=3600))
    sys.stdout.flush()
    issuer.thread.join()
