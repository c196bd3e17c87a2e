"""wfapp.signing against the Standard Webhooks test vector and the reference package."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from wfapp import signing

# The published test vector of the Standard Webhooks specification.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_test_vector():
    assert signing.sign_standard(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG
    assert signing.verify_standard([VECTOR_SECRET], VECTOR_ID, str(VECTOR_TS), VECTOR_SIG,
                                   VECTOR_BODY, now=VECTOR_TS) == VECTOR_TS


def test_what_the_reference_signs_we_accept():
    secret = signing.generate_secret()
    now = int(time.time())
    body = b'{"type": "order.paid", "id": "A-1", "total": 12.5}'
    reference = Webhook(secret).sign("msg_ref", datetime.fromtimestamp(now, tz=UTC),
                                     body.decode())
    assert signing.verify_standard([secret], "msg_ref", str(now), reference, body) == now


def test_what_we_sign_the_reference_verifies():
    secret = signing.generate_secret(48)
    body = b'{"hello": "w\xc3\xb6rld"}'
    headers = signing.standard_headers(secret, "msg_ours", body)
    assert Webhook(secret).verify(body, headers) == {"hello": "wörld"}
    tampered = dict(headers, **{"webhook-id": "msg_other"})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, tampered)


def test_rotation_two_signatures_and_two_keys():
    old, new = signing.generate_secret(), signing.generate_secret()
    now = int(time.time())
    body = b"{}"
    both = " ".join(signing.sign_standard(k, "m", now, body) for k in (old, new))
    # The sender signs with both keys while it rotates: we know only one of them.
    signing.verify_standard([new], "m", str(now), both, body)
    signing.verify_standard([old], "m", str(now), both, body)
    # We accept the previous key during our grace period.
    signing.verify_standard([new, old], "m", str(now),
                            signing.sign_standard(old, "m", now, body), body)
    with pytest.raises(signing.SignatureError, match="no webhook-signature matches"):
        signing.verify_standard([signing.generate_secret()], "m", str(now), both, body)


@pytest.mark.parametrize("change", ["body", "id", "timestamp", "secret"])
def test_tampering_is_refused(change):
    secret = signing.generate_secret()
    now = int(time.time())
    sig = signing.sign_standard(secret, "msg_1", now, b'{"a": 1}')
    args = {"keys": [secret], "msg_id": "msg_1", "timestamp": str(now), "body": b'{"a": 1}'}
    if change == "body":
        args["body"] = b'{"a": 2}'
    elif change == "id":
        args["msg_id"] = "msg_2"
    elif change == "timestamp":
        args["timestamp"] = str(now - 1)
    else:
        args["keys"] = [signing.generate_secret()]
    with pytest.raises(signing.SignatureError):
        signing.verify_standard(args["keys"], args["msg_id"], args["timestamp"], sig,
                                args["body"])


@pytest.mark.parametrize(("offset", "ok"), [(-300, True), (-301, False), (300, True),
                                            (301, False), (0, True)])
def test_five_minutes_both_ways(offset, ok):
    now = 1_700_000_000
    secret = signing.generate_secret()
    stamp = now + offset
    sig = signing.sign_standard(secret, "m", stamp, b"{}")
    if ok:
        assert signing.verify_standard([secret], "m", str(stamp), sig, b"{}", now=now) == stamp
    else:
        with pytest.raises(signing.SignatureError, match="too old|in the future"):
            signing.verify_standard([secret], "m", str(stamp), sig, b"{}", now=now)


@pytest.mark.parametrize("value", [None, "", "abc", "-5", "1.5", "1e9", "9" * 13, " ",
                                   "１２３"])
def test_bad_timestamps(value):
    with pytest.raises(signing.SignatureError):
        signing.check_timestamp(value)


@pytest.mark.parametrize("header", [None, "", "v1", "v1,", "v1,!!!", "v2,abc", "x" * 5000,
                                    " ".join(["v1,AAAA"] * 17), "v1a,abc"])
def test_bad_signature_headers(header):
    secret = signing.generate_secret()
    now = int(time.time())
    with pytest.raises(signing.SignatureError):
        signing.verify_standard([secret], "m", str(now), header, b"{}")


@pytest.mark.parametrize("msg_id", [None, "", "a b", "x" * 257, "msg\x00", "m\u00e9"])
def test_bad_message_ids(msg_id):
    secret = signing.generate_secret()
    now = int(time.time())
    with pytest.raises(signing.SignatureError):
        signing.verify_standard([secret], msg_id, str(now), "v1,AAAA", b"{}")


@pytest.mark.parametrize(("secret", "message"), [
    ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with whsec_"),
    ("whsec_c2VjcmV0", "24–64 bytes"),
    ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24–64 bytes"),
    ("whsec_not base64!", "base64"),
])
def test_secret_parsing(secret, message):
    with pytest.raises(ValueError, match=message):
        signing.parse_secret(secret)


def test_secrets_parse_padded_and_unpadded():
    assert len(signing.parse_secret(VECTOR_SECRET)) == 24
    generated = signing.generate_secret(64)
    assert len(signing.parse_secret(generated)) == 64
    assert len(signing.parse_secret(generated.rstrip("="))) == 64


def test_github_style_hmac():
    secret, body = "It's a Secret to Everybody", b"Hello, World!"
    # GitHub's documented example: X-Hub-Signature-256 for this secret and payload.
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signing.sign_hmac(secret, body, prefix="sha256=") == expected
    signing.verify_hmac([secret], body, expected, prefix="sha256=")
    signing.verify_hmac([secret], body, expected.upper().replace("SHA256=", "sha256="),
                        prefix="sha256=")
    with pytest.raises(signing.SignatureError, match="must start with"):
        signing.verify_hmac([secret], body, expected[7:], prefix="sha256=")
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify_hmac([secret], body + b" ", expected, prefix="sha256=")


def test_shopify_style_hmac():
    secret, body = "shpss_example", b'{"id": 820982911946154508}'
    value = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    assert signing.sign_hmac(secret, body, encoding="base64") == value
    signing.verify_hmac(["old", secret], body, value, encoding="base64")
    with pytest.raises(signing.SignatureError, match="not base64"):
        signing.verify_hmac([secret], body, "%%%", encoding="base64")


@pytest.mark.parametrize("algorithm", signing.ALGORITHMS)
def test_every_algorithm(algorithm):
    digest = hmac.new(b"k", b"m", algorithm).hexdigest()
    assert signing.sign_hmac("k", b"m", algorithm=algorithm) == digest
    signing.verify_hmac(["k"], b"m", digest, algorithm=algorithm)


def test_signed_content_template():
    assert signing.signed_content("{body}", b"B{timestamp}") == b"B{timestamp}"
    assert signing.signed_content("v0:{timestamp}:{body}", b"{}", "17") == b"v0:17:{}"
