#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for patrol's notification tests.

Every accepted message is written to OUT/<n>.json as {"mail_from", "rcpt_tos",
"data" (raw), "subject", "to", "from", "severity", "content_type", "text", "html" (decoded), "auth_user", "tls"}
(written to a temporary name, then renamed, so a reader never sees half a file). Prints "READY <port>" on
stdout once it accepts connections, then runs until killed.

Options: --tls none|starttls|implicit (with --cert/--key), --user/--password-env (AUTH PLAIN/LOGIN
required; the password is read from the named environment variable), --fail-first N (answer the first N
messages with a transient 451), --reject (answer every message with a permanent 554).
"""
import argparse
import email
import email.policy
import itertools
import json
import logging
import os
import socket
import ssl
import sys
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, out, fail_first, reject):
        self.out = out
        self.count = itertools.count()
        self.fail_left = fail_first
        self.reject = reject

    async def handle_DATA(self, server, session, envelope):
        if self.reject:
            return "554 5.7.1 rejected by test server"
        if self.fail_left > 0:
            self.fail_left -= 1
            return "451 4.3.0 try again later (test server)"
        auth = session.auth_data
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        text = parsed.get_body(("plain",))
        html = parsed.get_body(("html",))
        rec = {
            "subject": str(parsed["subject"]),
            "to": str(parsed["to"]),
            "from": str(parsed["from"]),
            "severity": str(parsed["x-patrol-severity"]),
            "content_type": parsed.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.original_content.decode("utf-8", "replace"),
            "auth_user": auth.login.decode() if isinstance(auth, LoginPassword) else None,
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
        }
        path = os.path.join(self.out, "%04d.json" % next(self.count))
        with open(path + ".tmp", "w") as f:
            json.dump(rec, f)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 OK"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    # Expected noise (a client refusing the test CA, AUTH without STARTTLS on loopback) stays quiet.
    warnings.filterwarnings("ignore")
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password-env")
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--reject", action="store_true")
    a = p.parse_args()

    kwargs = {}
    ctx = None
    if a.tls != "none":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
    if a.tls == "starttls":
        kwargs.update(tls_context=ctx, require_starttls=True)
    elif a.tls == "implicit":
        kwargs.update(ssl_context=ctx)
    if a.user:
        password = os.environ[a.password_env].encode()

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == a.user.encode()
                and auth_data.password == password
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        # Plain connections are loopback-only in these tests; production patrol refuses AUTH in clear
        # to anything but loopback. aiosmtpd's auth_require_tls only recognises STARTTLS, so it is off for
        # implicit TLS (where the whole session is encrypted anyway; the record's "tls" field proves it).
        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=(a.tls == "starttls"))

    for _ in range(20):
        port = free_port()
        controller = Controller(Sink(a.out, a.fail_first, a.reject), hostname="127.0.0.1", port=port, **kwargs)
        try:
            controller.start()
            break
        except Exception as e:  # port taken between probe and bind: try another
            last = e
            time.sleep(0.05)
    else:
        print("FAILED %s" % last, flush=True)
        sys.exit(1)
    print("READY %d" % port, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
