"""The Secret wrapper and the logging filter that keeps registered secrets out of log lines."""

from __future__ import annotations

import base64
import gc
import json
import logging
import pickle
import threading
from urllib.parse import quote, quote_plus

import pytest

from bot.redaction import MASK, RedactingFilter, Secret, mask_hint, redact

SECRET = "R15hoiDIq8Nxu/lY4mPO3DwAVIfU5W7OI+efsB607mLgHTnVW5XJGVqX2ysDx987"
KEY = "ABCD1234567890AB"


def test_secret_hides_its_value_in_every_text_form() -> None:
    secret = Secret(SECRET)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % (secret,), repr([secret])):  # noqa: UP031 (logging formats with %)
        assert SECRET not in text
    assert secret.reveal() == SECRET


def test_secret_refuses_pickling() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret(SECRET))


def test_secret_equality_and_masking() -> None:
    assert Secret(SECRET) == Secret(SECRET)
    assert Secret(SECRET) != Secret(SECRET[:-1] + "x")
    assert Secret(KEY).masked() == "ABCD…90AB"
    assert mask_hint("short") == "…"


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        quote(SECRET, safe=""),
        quote_plus(SECRET, safe=""),
        json.dumps(SECRET)[1:-1],
    ],
)
def test_redact_masks_a_live_secret_in_its_encoded_forms(form: str) -> None:
    holder = Secret(SECRET)
    assert redact(f"before {form} after") == f"before {MASK} after"
    del holder


def test_redact_masks_basic_auth_however_many_secrets_are_live() -> None:
    crowd = [Secret(f"another-live-secret-{n:04d}") for n in range(50)]
    key, secret = Secret(KEY), Secret(SECRET)
    header = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    assert redact(f"Authorization: Basic {header}") == f"Authorization: Basic {MASK}"
    unrelated = base64.b64encode(b"someone:else-entirely").decode()
    assert redact(f"Authorization: Basic {unrelated}") == f"Authorization: Basic {unrelated}"
    del key, secret, crowd


def test_a_value_is_no_longer_masked_once_every_holder_is_gone() -> None:
    value = "temporary-value-123456"
    holder = Secret(value)
    assert value not in redact(value)
    del holder
    gc.collect()
    assert redact(value) == value


def _emit(logger_name: str, message: str, *args: object) -> str:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.info(message, *args)
    finally:
        logger.removeHandler(handler)
    return "\n".join(records)


def test_filter_masks_secrets_passed_as_arguments() -> None:
    holder = Secret(SECRET)
    assert SECRET not in _emit("tests.redaction", "value=%s", SECRET)
    del holder


def test_filter_masks_bolt_request_bodies_even_for_unregistered_values() -> None:
    body = "payload=" + quote(json.dumps({"api_secret": "never-registered-secret-value"}))
    line = _emit("slack_bolt.AsyncRequestVerification", f"Invalid request signature detected (body: {body})")
    assert "never-registered-secret-value" not in line
    assert "Invalid request signature detected" in line


def test_filter_masks_secrets_in_tracebacks() -> None:
    holder = Secret(SECRET)
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.redaction.traceback")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"bad value {SECRET}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert records and "ValueError" in records[0]
    assert SECRET not in records[0]
    del holder


@pytest.mark.parametrize("password", ["p4w", "a", "x!", "12345"])
def test_a_short_password_is_masked_wherever_it_stands_alone(password: str) -> None:
    holder = Secret(password)
    line = _emit(
        "tests.redaction.short",
        "connecting as %s with password %s; form %s; json %s",
        "awsuser",
        password,
        f"user=awsuser&password={quote_plus(password)}&db=dev",
        json.dumps({"password": password}),
    )
    assert line.count(MASK) == 3
    assert f" {password};" not in line and f"={quote_plus(password)}&" not in line
    assert json.dumps(password) not in line
    del holder


def test_a_short_secret_leaves_the_words_it_is_part_of_alone() -> None:
    holder, basic = Secret("abc"), base64.b64encode(b"user:abcdef").decode()
    text = f"abcdef fabc ab_abc abc. Authorization: Basic {basic}"
    assert redact(text) == f"abcdef fabc ab_abc {MASK}. Authorization: Basic {basic}"
    assert redact("Basic " + base64.b64encode(b"user:abc").decode()) == f"Basic {MASK}"
    del holder


def test_a_secret_collected_while_the_registry_is_busy_does_not_deadlock() -> None:
    # The garbage collector runs finalizers wherever it strikes, the registry's own critical section
    # included: one that waited for the lock there would wait for itself forever.
    from bot import redaction

    secret = Secret("collected-while-busy")

    def collect_inside_the_lock() -> None:
        nonlocal secret
        with redaction._registry._lock:
            del secret  # the last reference: its finalizer runs here, in this thread

    worker = threading.Thread(target=collect_inside_the_lock, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "a finalizer deadlocked on the registry's lock"
    assert "collected-while-busy" not in redaction._registry.values()
