"""Schemathesis hooks of the contract test (scripts/contract_test.py loads them through
SCHEMATHESIS_HOOKS).

The description states every rule the server enforces that JSON Schema can say. The
rules it cannot say, and only those, are let through here, and only as a rejected
schema-valid request (`positive_data_acceptance`) whose answer is the 422 of exactly
that rule, confirmed by recomputing the rule on the request that was sent:

- Blank text. A text, label or label example must hold something a model can read:
  the server counts a string made only of whitespace and of Unicode's
  Default_Ignorable_Code_Point characters (zero-width spaces and joiners, soft hyphens,
  bidi marks, variation selectors...) as empty (src/engine/text.rs). The description
  says `minLength: 1` and a pattern that wants one non-whitespace character; JSON Schema
  has no character class for "invisible", and regex dialects disagree on a few
  whitespace characters (U+0085 is whitespace to the server, not to ECMA-262's `\\s`).
- Labels are distinct once trimmed: the description says `uniqueItems`, which cannot
  see that `"a"` and `"a "` are the same label.
- `descriptions` and `examples` are keyed by the request's own labels: JSON Schema
  cannot tie one field's keys to another field's values.
- `PUT /v1/classifiers/{name}`: a `name` in the body must be the path's. JSON Schema
  cannot compare a body field with a path parameter.
- A rule of the job's state rather than of the request: `POST /v1/batch/{id}/start`
  for a job whose file was never uploaded (422: the stateful phase follows the link
  from create to start without the upload between).
- `GET /v1/usage`'s window: `from` on or before `to` (default today) and at most 366
  days before it. JSON Schema cannot compare two parameters, nor a date with today.
- A saved classifier's lessons, rules of what is stored and of what texts mean:
  `POST /v1/classifiers/{name}/adapt` is refused by adaptation's guard rails (too few
  texts, texts that concentrate on few labels: 422 "adaptation refused"), takes exactly
  one of `texts` and `job_id` (400), and a job that has completed with the classifier's
  labels (409, 422 `job_id`); `POST /v1/classifiers/{name}/examples` takes examples
  for the saved classifier's labels only (400 naming the label) and at most 64 per
  label once added to the saved ones (422).
- `POST /v1/batch` with `save_adapted: true` needs a `classifier` (422 `save_adapted`):
  JSON Schema cannot make one field's value require another field.

Any other rejection of a schema-valid request still fails the run.


Two more hooks are no exclusions but make the requests what a client sends:

- The local upload form (`POST /uploads`) sends its parts in the order the description
  lists them (key, policy, signature, then file). JSON Schema has no keyword for the
  order of an object's members, and Schemathesis' generator sorts them by name.
- A valid `Idempotency-Key` names one request: the generator draws few distinct keys, so
  most requests would reuse one with another body (422, as the description says) and
  never reach the body's rules, and a replayed create (`Idempotent-Replayed: true`)
  answers a resource the run may have deleted since. Each request's key is made unique
  (a counter in front, still 1-255 visible ASCII); invalid keys are sent as drawn.
  tests/idempotency.rs tests replays and reuse.
- A `webhook_url`'s host becomes `localhost`: a job the run ends (a cancel, inline
  items started) is announced to its URL, and a generated name (`a`, `x0.io`) would
  send a DNS query off this machine. `localhost` resolves from /etc/hosts to a loopback
  address, which the dispatcher refuses without sending anything; the URL stays
  schema-valid, and the server accepts names at creation.
"""
import datetime
import itertools
import re
import urllib.parse

import schemathesis

# Rust's char::is_whitespace (Unicode White_Space), as src/engine/text.rs uses it.
WHITESPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}
# Unicode Default_Ignorable_Code_Point, as src/engine/text.rs lists it.
IGNORABLE_RANGES = [
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
]


def trim(text):
    """Rust's str::trim: strips White_Space (Python's strip also strips U+001C-U+001F)."""
    start, end = 0, len(text)
    while start < end and text[start] in WHITESPACE:
        start += 1
    while end > start and text[end - 1] in WHITESPACE:
        end -= 1
    return text[start:end]


def is_blank(text):
    """src/engine/text.rs's is_blank: only whitespace and invisible characters."""
    return all(
        c in WHITESPACE or any(lo <= ord(c) <= hi for lo, hi in IGNORABLE_RANGES)
        for c in text
    )


def error_of(response):
    """The error body's `error` object, or None."""
    try:
        error = response.json().get("error")
    except Exception:  # noqa: BLE001 - not JSON: not one of the rules below
        return None
    return error if isinstance(error, dict) else None


def blank_value(body, param):
    """The string of `body` that the 422's `param` names, when the server's blank rule
    refuses it: `text`, `texts[i]`, `labels[i]` or `examples.<label>[j]`."""
    if not isinstance(body, dict) or not isinstance(param, str):
        return None
    value = None
    if param == "text":
        value = body.get("text")
    elif m := re.fullmatch(r"(texts|labels)\[(\d+)\]", param):
        items = body.get(m.group(1))
        index = int(m.group(2))
        value = items[index] if isinstance(items, list) and index < len(items) else None
    elif m := re.fullmatch(r"examples\.(.*)\[(\d+)\]", param, re.DOTALL):
        texts = (body.get("examples") or {}).get(m.group(1))
        index = int(m.group(2))
        value = texts[index] if isinstance(texts, list) and index < len(texts) else None
    return value if isinstance(value, str) and is_blank(value) else None


def parse_day(text):
    try:
        return datetime.date.fromisoformat(text) if len(text) == 10 else None
    except (TypeError, ValueError):
        return None


def usage_window_refused(query):
    """Whether `GET /v1/usage`'s range (defaults filled in as the server does) is
    backwards or longer than 366 days."""
    query = query or {}
    to = parse_day(query["to"]) if "to" in query else datetime.datetime.now(datetime.UTC).date()
    if to is None:
        return False
    start = parse_day(query["from"]) if "from" in query else to.replace(day=1)
    if start is None:
        return False
    return start > to or (to - start).days >= 366


def trimmed_labels(body):
    labels = body.get("labels") if isinstance(body, dict) else None
    return [trim(label) for label in labels if isinstance(label, str)] if isinstance(labels, list) else []


def unknown_label_key(body, param):
    """`descriptions.<key>` or `examples.<key>` naming a label the request does not have."""
    if not isinstance(body, dict) or not isinstance(param, str):
        return False
    field, _, key = param.partition(".")
    if field not in ("descriptions", "examples") or not isinstance(body.get(field), dict):
        return False
    # The server trims keys as it trims labels.
    return key in body[field] and trim(key) not in trimmed_labels(body)


def duplicate_once_trimmed(body, param):
    """`labels[i]` equal to an earlier label once both are trimmed (not as sent)."""
    m = re.fullmatch(r"labels\[(\d+)\]", param or "")
    labels = body.get("labels") if isinstance(body, dict) else None
    if not m or not isinstance(labels, list) or int(m.group(1)) >= len(labels):
        return False
    index = int(m.group(1))
    earlier = [trim(label) for label in labels[:index]]
    return labels[index] not in labels[:index] and trim(labels[index]) in earlier


def body_name_differs(case, param):
    body = case.body if isinstance(case.body, dict) else {}
    name = body.get("name")
    path_name = (case.path_parameters or {}).get("name")
    return param == "name" and isinstance(name, str) and name != path_name


def lesson_refused(operation, status, param, message):
    """A classifier lesson (or a job's `save_adapted`) refused by a rule of what is stored
    or of what the texts mean, which no schema can say."""
    if operation == ("POST", "/v1/classifiers/{name}/adapt"):
        return ((status == 422 and "adaptation refused" in message)
                or (status == 400 and "exactly one" in message)
                or (status == 409 and "adapt from a completed job" in message)
                or (status == 422 and param == "job_id"))
    if operation == ("POST", "/v1/batch"):
        return status == 422 and param == "save_adapted" and "needs a classifier" in message
    if operation == ("POST", "/v1/classifiers/{name}/examples"):
        return ((status == 400 and "unknown label" in message)
                or (status == 422 and "examples per label" in message))
    return False


BODY_OPERATIONS = {("POST", "/v1/classify"), ("POST", "/v1/batch"),
                   ("POST", "/v1/classifiers"), ("PUT", "/v1/classifiers/{name}"),
                   ("POST", "/v1/classifiers/{name}/adapt"), ("POST", "/v1/classifiers/{name}/examples")}


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """False (drop the failure) only for a 422 of one of the rules above."""
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code not in (400, 409, 422):
        return True
    error = error_of(response)
    if error is None:
        return True
    param = error.get("param")
    message = str(error.get("message"))
    operation = (case.method.upper(), case.operation.path)
    if lesson_refused(operation, response.status_code, param, message):
        return False
    if response.status_code != 422:
        return True
    if operation in BODY_OPERATIONS and (
        blank_value(case.body, param) is not None
        or (duplicate_once_trimmed(case.body, param) and "duplicate label" in message)
        or (unknown_label_key(case.body, param) and "for unknown label" in message)
    ):
        return False
    if operation == ("PUT", "/v1/classifiers/{name}") and body_name_differs(case, param):
        return False
    if operation == ("POST", "/v1/batch/{id}/start") and param == "file" and "no file was uploaded" in message:
        return False
    if operation == ("GET", "/v1/usage") and param in ("from", "to"):
        return not usage_window_refused(case.query)
    return True


def form_order(case):
    """The property names of a multipart body's schema, in the description's order."""
    raw = case.operation.schema.raw_schema
    content = (case.operation.definition.raw.get("requestBody") or {}).get("content") or {}
    schema = (content.get("multipart/form-data") or {}).get("schema") or {}
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = raw["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return list((schema.get("properties") or {}).keys())


def on_localhost(url):
    """`url` with its host replaced by `localhost` (port, path and query kept), when it
    parses as an http(s) URL with a host; otherwise as it was."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return url
    netloc = "localhost" if port is None else f"localhost:{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


REQUESTS = itertools.count()


@schemathesis.hook
def before_call(context, case, kwargs):
    """A fresh Idempotency-Key per request; a form's parts in the description's order;
    webhooks to localhost."""
    headers = case.headers or {}
    for name, value in headers.items():
        if name.lower() == "idempotency-key" and isinstance(value, str) and re.fullmatch(r"[!-~]{1,255}", value):
            headers[name] = f"{next(REQUESTS)}-{value}"[:255]
    if isinstance(case.body, dict) and isinstance(case.body.get("webhook_url"), str):
        case.body["webhook_url"] = on_localhost(case.body["webhook_url"])
    if case.media_type == "multipart/form-data" and isinstance(case.body, dict):
        order = form_order(case)
        rank = {name: i for i, name in enumerate(order)}
        case.body = dict(sorted(case.body.items(), key=lambda item: rank.get(item[0], len(order))))
    # Neither edit changes whether the request is schema-valid: take the edited values as
    # the generated ones. Otherwise Schemathesis (4.32.5) revalidates an edited case and
    # relabels, e.g., a coverage case "missing Authorization" as positive, then sends it
    # with the key after all.
    case._sync_validated_hashes()
