"""A local SMTP server for the e-mail notification test: STARTTLS required, AUTH required
(user `tidemark`, password from argv), every accepted message appended to a JSON-lines file.

usage: smtp_receiver.py CERT KEY PORT PASSWORD OUT
Prints `ready` once it accepts connections.
"""
import json
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

cert, key, port, password, out = sys.argv[1:6]


class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps({
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "tls": session.ssl is not None,
                "authenticated": bool(session.authenticated),
                "data": envelope.content.decode("utf-8", "replace"),
            }) + "\n")
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login == b"tidemark"
          and auth_data.password == password.encode())
    # handled=False: aiosmtpd answers 535 itself (its default, True, means "already answered").
    return AuthResult(success=ok, handled=False)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=int(port),
    tls_context=context,
    require_starttls=True,
    authenticator=authenticate,
    auth_required=True,
    auth_require_tls=True,
)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
