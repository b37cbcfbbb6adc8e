"""The sandbox through the REAL mailchimp-transactional client, as the target will use it."""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from mailchimp_transactional.api_client import ApiClientError
from signalmail.sandbox.testing import run_sandbox
from signalmail.sandbox.validation import SpecValidator
from signalmail.sandbox.webhooks import verify_signature

from tests.helpers.servers import wait_until

KEY = "test-key-1"
SPEC = SpecValidator()

CART_TEMPLATE = """<html><body>
<h1>Hi {{first_name}}</h1>
<div mc:edit="hero"><p>default hero</p></div>
{{#each products}}<p class="item">{{name}} x{{quantity}} {{price}} {{../currency}}</p>
{{else}}<p>empty</p>{{/each}}
{{#if `cart_total > 100`}}<p>free shipping</p>
{{elseif `cart_total > 50`}}<p>almost free</p>{{else}}<p>standard</p>{{/if}}
<a href="https://shop.example/cart">cart</a>
<a href="{{unsub "https://shop.example/unsubscribed"}}">unsubscribe</a>
</body></html>"""


def error_of(call, *args, **kwargs) -> ApiClientError:
    with pytest.raises(ApiClientError) as info:
        call(*args, **kwargs)
    return info.value


def conforms(operation: str, result) -> None:
    problems = SPEC.response_problems(operation, 200, result)
    assert problems == [], problems


class Receiver:
    """A webhook endpoint recording HEAD probes and signed POSTs; can fail on demand."""

    def __init__(self) -> None:
        self.heads = 0
        self.posts: list[dict] = []
        self.fail_next = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                with receiver.lock:
                    receiver.heads += 1
                self.send_response(200)
                self.end_headers()

            def do_POST(self):
                length = int(self.headers["Content-Length"])
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                with receiver.lock:
                    failing = receiver.fail_next > 0
                    receiver.fail_next -= 1 if failing else 0
                    if not failing:
                        receiver.posts.append(
                            {
                                "params": {k: v[0] for k, v in form.items()},
                                "signature": self.headers.get("X-Mandrill-Signature"),
                            }
                        )
                self.send_response(500 if failing else 200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        with self.lock:
            return [e for p in self.posts for e in json.loads(p["params"]["mandrill_events"])]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with run_sandbox(
        tmp_path_factory.mktemp("sandbox"),
        api_keys=[KEY, "second-key"],
        subaccounts=["eu"],
        webhook_backoff_s=0.05,
        search_calls_per_minute=0,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(sandbox):
    return sandbox.client(KEY)


@pytest.fixture(scope="module")
def cart_template(client):
    result = client.templates.add(
        {
            "name": "Cart Abandonment",
            "code": CART_TEMPLATE,
            "subject": "{{first_name}}, your cart",
            "from_email": "shop@brand.example",
            "from_name": "Brand",
            "labels": ["cart"],
        }
    )
    conforms("templates/add", result)
    return result["slug"]


def send_cart(client, slug, to, **message):
    body = {
        "template_name": slug,
        "template_content": [{"name": "hero", "content": "<p>Come back!</p>"}],
        "message": {
            "to": to,
            "merge_language": "handlebars",
            "preserve_recipients": False,
            "global_merge_vars": [
                {"name": "first_name", "content": "friend"},
                {"name": "currency", "content": "EUR"},
                {"name": "cart_total", "content": 10},
            ],
            "metadata": {"campaign": "cart_abandonment"},
            "tags": ["cart_abandonment"],
            **message,
        },
    }
    result = client.messages.send_template(body)
    conforms("messages/send-template", result)
    return result


# ------------------------------------------------------------------------------ keys, validation


def test_ping_and_key_errors(sandbox, client):
    assert client.users.ping() == "PONG!"
    assert client.users.ping2() == {"PING": "PONG!"}
    assert sandbox.client("second-key").users.ping() == "PONG!"
    error = error_of(sandbox.client("wrong").users.ping)
    assert (error.status_code, error.text["name"], error.text["code"]) == (500, "Invalid_Key", -1)
    error = error_of(sandbox.client("").users.ping)
    assert error.text["name"] == "ValidationError"
    assert error.text["message"] == "You must specify a key value"


def test_missing_required_field_is_a_validation_error(client):
    error = error_of(client.messages.send_template, {"template_content": [], "message": {"to": []}})
    assert error.text["name"] == "ValidationError"
    assert error.text["code"] == -2
    assert "template_name" in error.text["message"]
    error = error_of(
        client.messages.send,
        {"message": {"to": [{"email": "a@b.example"}], "merge_language": "liquid"}},
    )
    assert "merge_language" in error.text["message"]
    error = error_of(client.templates.info, {"name": "x", "unexpected": True})
    assert "unexpected" in error.text["message"]


def test_spec_error_style_uses_documented_statuses(tmp_path):
    with run_sandbox(tmp_path, api_keys=[KEY], error_style="spec") as running:
        error = error_of(running.client("nope").users.ping)
        assert (error.status_code, error.text["code"]) == (401, 401)
        assert SPEC.response_problems("users/ping", 401, error.text) == []
        error = error_of(running.client(KEY).templates.info, {"name": "missing"})
        assert (error.status_code, error.text["name"]) == (404, "Unknown_Template")


# ------------------------------------------------------------------------------ templates


def test_template_lifecycle_draft_publish_render_delete(client):
    created = client.templates.add(
        {
            "name": "Welcome Mail",
            "code": "<p>v1 *|FNAME|*</p>",
            "subject": "Hi",
            "from_email": "a@brand.example",
        }
    )
    assert created["slug"] == "welcome-mail"
    assert created["publish_code"] == "<p>v1 *|FNAME|*</p>"
    duplicate = error_of(client.templates.add, {"name": "Welcome Mail"})
    assert (duplicate.text["name"], duplicate.text["code"]) == ("Invalid_Template", 6)
    draft = client.templates.update(
        {"name": "welcome-mail", "code": "<p>v2 *|FNAME|*</p>", "publish": False}
    )
    conforms("templates/update", draft)
    assert draft["code"] == "<p>v2 *|FNAME|*</p>"
    assert draft["publish_code"] == "<p>v1 *|FNAME|*</p>"
    rendered = client.templates.render(
        {
            "template_name": "welcome-mail",
            "template_content": [],
            "merge_vars": [{"name": "fname", "content": "Ann"}],
        }
    )
    assert rendered == {"html": "<p>v1 Ann</p>"}
    client.templates.publish({"name": "welcome-mail"})
    info = client.templates.info({"name": "welcome-mail"})
    conforms("templates/info", info)
    assert info["publish_code"] == "<p>v2 *|FNAME|*</p>"
    assert client.templates.list({"label": "nothing"}).json() == []  # raw Response for []
    deleted = client.templates.delete({"name": "welcome-mail"})
    assert deleted["slug"] == "welcome-mail"
    assert (
        error_of(client.templates.info, {"name": "welcome-mail"}).text["name"] == "Unknown_Template"
    )


def test_broken_template_is_flagged_and_refused_at_send(client):
    broken = client.templates.add(
        {"name": "Broken", "code": "{{#if x}}never closed", "from_email": "a@b.example"}
    )
    assert broken["is_broken_template"] is True
    error = error_of(
        client.messages.send_template,
        {
            "template_name": "broken",
            "template_content": [],
            "message": {"to": [{"email": "x@y.example"}], "merge_language": "handlebars"},
        },
    )
    assert error.text["name"] == "Invalid_Template"
    assert "never closed" in error.text["message"]


def test_unknown_template_and_subaccount(client, cart_template):
    error = error_of(
        client.messages.send_template,
        {
            "template_name": "nope",
            "template_content": [],
            "message": {"to": [{"email": "a@b.example"}]},
        },
    )
    assert (error.text["name"], error.text["code"]) == ("Unknown_Template", 5)
    error = error_of(send_cart, client, cart_template, [{"email": "a@b.example"}], subaccount="us")
    assert (error.text["name"], error.text["code"]) == ("Unknown_Subaccount", 12)
    assert (
        send_cart(client, cart_template, [{"email": "eu@b.example"}], subaccount="eu")[0]["status"]
        == "sent"
    )


def test_template_list_by_label(client, cart_template):
    listed = client.templates.list({"label": "cart"})
    conforms("templates/list", listed)
    assert [t["slug"] for t in listed] == [cart_template]


# ------------------------------------------------------------------------------ sending


def test_send_template_renders_per_recipient_vars_over_globals(client, cart_template):
    to = [{"email": "ann@shop.example", "name": "Ann"}, {"email": "bob@shop.example"}]
    merge_vars = [
        {
            "rcpt": "ann@shop.example",
            "vars": [
                {"name": "first_name", "content": "Ann"},
                {"name": "cart_total", "content": 120},
                {
                    "name": "products",
                    "content": [
                        {"name": "Red <Hat>", "quantity": 2, "price": 9.5},
                        {"name": "Scarf", "quantity": 1, "price": 20},
                    ],
                },
            ],
        },
    ]
    results = send_cart(client, cart_template, to, merge_vars=merge_vars)
    assert [(r["email"], r["status"], r.get("reject_reason")) for r in results] == [
        ("ann@shop.example", "sent", None),
        ("bob@shop.example", "sent", None),
    ]
    assert len({r["_id"] for r in results}) == 2
    ann = client.messages.content({"id": results[0]["_id"]})
    conforms("messages/content", ann)
    assert ann["subject"] == "Ann, your cart"
    assert '<div mc:edit="hero"><p>Come back!</p></div>' in ann["html"]
    assert (
        '<p class="item">Red &lt;Hat&gt; x2 9.5 EUR</p>\n<p class="item">Scarf x1 20 EUR</p>'
        in ann["html"]
    )
    assert "<p>free shipping</p>" in ann["html"]
    assert "almost" not in ann["html"]
    assert ann["headers"]["To"] == '"Ann" <ann@shop.example>'  # preserve_recipients false
    bob = client.messages.content({"id": results[1]["_id"]})
    assert "Hi friend" in bob["html"]
    assert "<p>empty</p>" in bob["html"]
    assert "<p>standard</p>" in bob["html"]
    info = client.messages.info({"id": results[0]["_id"]})
    conforms("messages/info", info)
    assert (info["template"], info["metadata"], info["tags"]) == (
        cart_template,
        {"campaign": "cart_abandonment"},
        ["cart_abandonment"],
    )


def test_preserve_recipients_shows_everyone_but_bcc(client, cart_template):
    to = [
        {"email": "a1@x.example"},
        {"email": "a2@x.example", "type": "cc"},
        {"email": "a3@x.example", "type": "bcc"},
    ]
    results = send_cart(client, cart_template, to, preserve_recipients=True)
    headers = client.messages.content({"id": results[2]["_id"]})["headers"]
    assert headers["To"] == "a1@x.example, a2@x.example"


def test_recipient_statuses_rejects_and_invalid(client, cart_template):
    added = client.rejects.add({"email": "blocked@shop.example", "comment": "asked by phone"})
    conforms("rejects/add", added)
    to = [
        {"email": e}
        for e in (
            "ok@shop.example",
            "blocked@shop.example",
            "hard-bounce@shop.example",
            "someone@reject.example",
            "not-an-address",
            "x@invalid.example",
        )
    ]
    results = send_cart(client, cart_template, to)
    assert [(r["status"], r.get("reject_reason")) for r in results] == [
        ("sent", None),
        ("rejected", "custom"),
        ("rejected", "hard-bounce"),
        ("rejected", "custom"),
        ("invalid", None),
        ("invalid", None),
    ]
    assert client.messages.info({"id": results[1]["_id"]})["state"] == "rejected"


def test_more_than_ten_recipients_are_queued_then_sent(sandbox, client, cart_template):
    to = [{"email": f"bulk{i}@shop.example"} for i in range(11)]
    results = send_cart(client, cart_template, to)
    assert {(r["status"], r.get("queued_reason")) for r in results} == {
        ("queued", "multiple-recipients")
    }
    sandbox.wait_delivered()
    assert client.messages.info({"id": results[0]["_id"]})["state"] == "sent"
    single = send_cart(client, cart_template, [{"email": "async@shop.example"}])
    assert single[0]["status"] == "sent"
    forced = client.messages.send_template(
        {
            "template_name": cart_template,
            "template_content": [],
            "async": True,
            "message": {"to": [{"email": "async@shop.example"}]},
        }
    )
    assert forced[0]["status"] == "queued"


def test_send_at_schedules_future_sends_and_refuses_far_future(client, cart_template):
    import datetime as dt

    def send_at(when: dt.datetime):
        return client.messages.send_template(
            {
                "template_name": cart_template,
                "template_content": [],
                "send_at": when.strftime("%Y-%m-%d %H:%M:%S"),
                "message": {"to": [{"email": "later@shop.example"}]},
            }
        )

    now = dt.datetime.now(dt.UTC)
    scheduled = send_at(now + dt.timedelta(days=1))
    assert scheduled[0]["status"] == "scheduled"
    assert client.messages.info({"id": scheduled[0]["_id"]})["state"] == "scheduled"
    assert send_at(now - dt.timedelta(days=1))[0]["status"] == "sent"  # past: sent now
    error = error_of(send_at, now + dt.timedelta(days=400))
    assert error.text["name"] == "ValidationError"
    assert "one year" in error.text["message"]


def test_metadata_and_tag_rules(client, cart_template):
    error = error_of(
        send_cart, client, cart_template, [{"email": "m@x.example"}], metadata={"blob": "x" * 300}
    )
    assert error.text["name"] == "ValidationError"
    assert "250" in error.text["message"]
    error = error_of(
        send_cart, client, cart_template, [{"email": "m@x.example"}], metadata={"nested": {"a": 1}}
    )
    assert "scalar" in error.text["message"]
    error = error_of(
        send_cart, client, cart_template, [{"email": "m@x.example"}], tags=["_internal"]
    )
    assert "underscore" in error.text["message"]
    for where in ("global_merge_vars", "merge_vars"):
        var = {"name": "_secret", "content": "x"}
        value = [var] if where == "global_merge_vars" else [{"rcpt": "m@x.example", "vars": [var]}]
        error = error_of(
            send_cart, client, cart_template, [{"email": "m@x.example"}], **{where: value}
        )
        assert error.text["name"] == "ValidationError"
        assert "may not start with _" in error.text["message"]
    error = error_of(
        send_cart, client, cart_template, [{"email": "m@x.example"}], metadata={"_private": "x"}
    )
    assert "may not start with _" in error.text["message"]


def test_messages_send_with_mailchimp_merge_tags(client):
    results = client.messages.send(
        {
            "message": {
                "html": '<p>Hi *|FNAME|* *|IF:VIP|*(vip)*|END:IF|*</p><a href="*|UNSUB|*">u</a>',
                "subject": "Hello *|FNAME|*",
                "from_email": "shop@brand.example",
                "to": [{"email": "c1@x.example"}, {"email": "c2@x.example"}],
                "global_merge_vars": [{"name": "FNAME", "content": "you"}],
                "merge_vars": [
                    {
                        "rcpt": "c2@x.example",
                        "vars": [
                            {"name": "fname", "content": "Cy"},
                            {"name": "vip", "content": "1"},
                        ],
                    }
                ],
            }
        }
    )
    conforms("messages/send", results)
    one, two = (client.messages.content({"id": r["_id"]}) for r in results)
    assert one["subject"] == "Hello you"
    assert one["html"].startswith("<p>Hi you </p>")
    assert two["subject"] == "Hello Cy"
    assert two["html"].startswith("<p>Hi Cy (vip)</p>")
    assert "/sandbox/unsub?md_id=" + results[0]["_id"] in one["html"]
    missing_sender = client.messages.send(
        {"message": {"html": "x", "to": [{"email": "c3@x.example"}]}}
    )
    assert (missing_sender[0]["status"], missing_sender[0]["reject_reason"]) == (
        "rejected",
        "invalid-sender",
    )


def test_no_recipients_answers_an_empty_list(client, cart_template):
    raw = client.messages.send_template(
        {"template_name": cart_template, "template_content": [], "message": {"to": []}}
    )
    assert isinstance(raw, requests.Response)  # the client's quirk for a falsy JSON answer
    assert (raw.status_code, raw.json()) == (200, [])


def test_unknown_message(client):
    error = error_of(client.messages.info, {"id": "does-not-exist"})
    assert (error.text["name"], error.text["code"]) == ("Unknown_Message", 11)


# ------------------------------------------------------------------------------ Mailchimp templates


def test_mc_templates_seed_list_render_send(sandbox, client):
    seeded = sandbox.seed_mc_templates(
        [
            {
                "mc_template_name": "Browse reminder",
                "code": "<p>Still looking at {{product}}, {{first_name}}?</p>",
                "subject": "Still interested?",
                "from_email": "shop@brand.example",
                "from_name": "Brand",
            },
            {"mc_template_name": "Draft only", "code": "<p>draft</p>", "publish": False},
        ]
    )
    published, draft = (t["mc_template_id"] for t in seeded)
    listed = client.mctemplates.mc_templates_list({"search_query": "browse"})
    conforms("mctemplates/list", listed)
    assert [t["mc_template_id"] for t in listed] == [published]
    conforms(
        "mctemplates/info", client.mctemplates.mc_templates_info({"mc_template_id": published})
    )
    rendered = client.mctemplates.mc_templates_render(
        {"mc_template_id": published, "merge_vars": [{"name": "product", "content": "Boots"}]}
    )
    assert rendered == {"html": "<p>Still looking at Boots, ?</p>"}
    results = client.messages.send_mc_template(
        {
            "mc_template_id": published,
            "message": {
                "to": [{"email": "mc@x.example"}],
                "merge_language": "handlebars",
                "global_merge_vars": [
                    {"name": "first_name", "content": "Di"},
                    {"name": "product", "content": "Boots"},
                ],
            },
        }
    )
    content = client.messages.content({"id": results[0]["_id"]})
    assert content["html"] == "<p>Still looking at Boots, Di?</p>"
    assert content["subject"] == "Still interested?"
    error = error_of(
        client.messages.send_mc_template,
        {"mc_template_id": draft, "message": {"to": [{"email": "mc@x.example"}]}},
    )
    assert error.text["name"] == "Unknown_Message"
    assert (
        error_of(client.mctemplates.mc_templates_info, {"mc_template_id": 1}).text["name"]
        == "Unknown_Message"
    )


# ------------------------------------------------------------------------------ rejects


def test_rejects_add_list_delete(client):
    client.rejects.add({"email": "Gone@Shop.example"})
    listed = client.rejects.list({"email": "gone@shop.example"})
    conforms("rejects/list", listed)
    assert [(r["email"], r["reason"], r["expired"]) for r in listed] == [
        ("gone@shop.example", "custom", False)
    ]
    deleted = client.rejects.delete({"email": "gone@shop.example"})
    conforms("rejects/delete", deleted)
    assert deleted["deleted"] is True
    error = error_of(client.rejects.delete, {"email": "gone@shop.example"})
    assert (error.text["name"], error.text["code"]) == ("Invalid_Reject", 4)
    error = error_of(client.rejects.add, {"email": "not an address"})
    assert error.text["name"] == "ValidationError"


# ------------------------------------------------------------------------------ search


def test_search_by_indexed_metadata_dates_and_limit(client, cart_template):
    results = send_cart(
        client,
        cart_template,
        [{"email": "s1@x.example"}, {"email": "s2@x.example"}],
        metadata={"trigger_id": "trg-search-1", "campaign": "cart_abandonment"},
    )
    assert (
        client.messages.search({"query": "u_trigger_id:trg-search-1"}).json() == []
    )  # not indexed yet
    conforms("metadata/add", client.metadata.add({"name": "trigger_id"}))
    assert client.metadata.list() == [
        {"name": "trigger_id", "state": "active", "view_template": None}
    ]
    found = client.messages.search({"query": "u_trigger_id:trg-search-1"})
    conforms("messages/search", found)
    assert sorted(m["_id"] for m in found) == sorted(r["_id"] for r in results)
    assert found[0]["metadata"]["trigger_id"] == "trg-search-1"
    assert len(client.messages.search({"query": 'u_trigger_id:"trg-search-1"', "limit": 1})) == 1
    narrowed = client.messages.search({"query": "u_trigger_id:trg-search-1 AND email:s2@x.example"})
    assert [m["email"] for m in narrowed] == ["s2@x.example"]
    old = client.messages.search(
        {"query": "u_trigger_id:trg-search-1", "date_from": "2020-01-01", "date_to": "2020-01-02"}
    )
    assert old.json() == []  # the client returns a raw Response for []: a quirk callers must handle
    assert isinstance(old, requests.Response)
    assert client.messages.search({"query": "trg-search-1", "tags": ["other"]}).json() == []
    error = error_of(client.messages.search, {"query": "email:*x.example"})
    assert "leading wildcards" in error.text["message"]


def test_search_rate_limit(tmp_path):
    with run_sandbox(tmp_path, api_keys=[KEY, "other"], search_calls_per_minute=3) as running:
        client = running.client(KEY)
        for _ in range(3):
            client.messages.search({"query": "*"})
        error = error_of(client.messages.search, {"query": "*"})
        assert (error.status_code, error.text["name"]) == (429, "RequestLimitExceeded")
        assert SPEC.response_problems("rejects/list", 429, error.text) == []
        running.client("other").messages.search({"query": "*"})  # the limit is per key


# ------------------------------------------------------------------------------ webhooks


def test_webhooks_signed_events_retries_and_simulated_engagement(sandbox, client, cart_template):
    receiver = Receiver()
    try:
        bad = error_of(
            client.webhooks.add, {"url": "http://127.0.0.1:9/nothing", "events": ["send"]}
        )
        assert bad.text["name"] == "ValidationError"
        assert "could not be verified" in bad.text["message"]
        hook = client.webhooks.add(
            {
                "url": receiver.url,
                "events": ["send", "open", "click", "hard_bounce", "unsub", "reject"],
            }
        )
        conforms("webhooks/add", hook)
        assert receiver.heads == 1
        receiver.fail_next = 1  # the first delivery fails and must be retried
        results = send_cart(
            client,
            cart_template,
            [{"email": "hook@x.example"}, {"email": "spam@x.example"}],
            metadata={"trigger_id": "trg-hook"},
        )
        sandbox.wait_delivered()
        sent_id = results[0]["_id"]
        by_event = {(e["event"], e["_id"]) for e in receiver.events()}
        assert ("send", sent_id) in by_event
        assert ("reject", results[1]["_id"]) in by_event
        sandbox.simulate(sent_id, "open")
        sandbox.simulate(sent_id, "click", url="https://shop.example/cart")
        sandbox.simulate(sent_id, "hard_bounce")
        sandbox.wait_webhooks()
        for post in receiver.posts:
            assert verify_signature(
                hook["auth_key"], receiver.url, post["params"], post["signature"]
            )
        events = [e for e in receiver.events() if e["_id"] == sent_id]
        assert [e["event"] for e in events] == ["send", "open", "click", "hard_bounce"]
        click = events[2]
        assert click["url"] == "https://shop.example/cart"
        assert click["msg"]["metadata"] == {"trigger_id": "trg-hook"}
        assert click["msg"]["tags"] == ["cart_abandonment"]
        assert click["msg"]["email"] == "hook@x.example"
        assert events[3]["msg"]["state"] == "bounced"
        assert events[3]["msg"]["bounce_description"] == "bad_mailbox"
        info = client.messages.info({"id": sent_id})
        assert (info["opens"], info["clicks"], info["state"]) == (1, 1, "bounced")
        assert client.rejects.list({"email": "hook@x.example"})[0]["reason"] == "hard-bounce"
        again = send_cart(client, cart_template, [{"email": "hook@x.example"}])
        assert (again[0]["status"], again[0]["reject_reason"]) == ("rejected", "hard-bounce")
        listed = client.webhooks.list()
        conforms("webhooks/list", listed)
        assert listed[0]["events_sent"] >= 5
        assert listed[0]["last_error"] is None
    finally:
        receiver.close()


def test_unsubscribe_link_records_unsub_and_redirects(sandbox, client, cart_template):
    results = send_cart(client, cart_template, [{"email": "leaver@x.example"}])
    html = client.messages.content({"id": results[0]["_id"]})["html"]
    link = html.split('href="')[2].split('"')[0]
    assert link.startswith(sandbox.base_url + "/sandbox/unsub?")
    response = requests.get(link, allow_redirects=False, timeout=5)
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.example/unsubscribed"
    assert client.rejects.list({"email": "leaver@x.example"})[0]["reason"] == "unsub"


# ------------------------------------------------------------------------------ faults


def test_faults_by_name_429_5xx_and_reproducibility(sandbox, client):
    try:
        sandbox.set_faults(errors={"GeneralError": 1.0})
        error = error_of(client.users.ping)
        assert (error.status_code, error.text["name"]) == (500, "GeneralError")
        sandbox.set_faults(errors={"PaymentRequired": 1.0}, only=["messages/send"])
        assert client.users.ping() == "PONG!"
        assert (
            error_of(client.messages.send, {"message": {"to": []}}).text["name"]
            == "PaymentRequired"
        )
        sandbox.set_faults(http_429=1.0)
        error = error_of(client.users.ping)
        assert (error.status_code, error.text["name"]) == (429, "RequestLimitExceeded")
        sandbox.set_faults(http_5xx=1.0)
        raw = client.users.ping()
        assert isinstance(raw, requests.Response)
        assert raw.status_code == 503
        assert raw.content == b""

        def outcomes():
            out = []
            for _ in range(30):
                try:
                    out.append(client.users.ping())
                except ApiClientError as exc:
                    out.append(exc.text["name"])
            return out

        sandbox.set_faults(errors={"GeneralError": 0.3}, seed=5)
        first = outcomes()
        sandbox.set_faults(errors={"GeneralError": 0.3}, seed=5)
        assert outcomes() == first
        assert "GeneralError" in first
        assert "PONG!" in first
        bad = requests.post(
            sandbox.base_url + "/sandbox/faults", json={"errors": {"Nope": 1}}, timeout=5
        )
        assert bad.status_code == 400
        assert "unknown error name" in bad.json()["error"]
    finally:
        sandbox.set_faults()
    assert client.users.ping() == "PONG!"


def test_lost_answer_fault_sends_but_answers_an_empty_list(sandbox, client, cart_template):
    try:
        sandbox.set_faults(lost_answer=1.0, only=["messages/send-template"])
        assert client.users.ping() == "PONG!"  # `only` leaves other operations alone
        body = {
            "template_name": cart_template,
            "template_content": [],
            "message": {"to": [{"email": "lost@example.com"}], "metadata": {"n": "1"}},
        }
        raw = client.messages.send_template(body)
        assert isinstance(raw, requests.Response)  # the client's quirk for a falsy answer
        assert (raw.status_code, raw.json()) == (200, [])
    finally:
        sandbox.set_faults()
    stored = client.messages.search({"query": "email:lost@example.com"})
    assert [m["email"] for m in stored] == ["lost@example.com"]  # the send did happen
    with pytest.raises(ValueError, match="lost_answer must be a rate"):
        sandbox.sandbox.faults.set(type(sandbox.sandbox.faults.plan)(lost_answer=2))


def test_timeout_fault_outlasts_the_client_timeout(sandbox):
    client = sandbox.client(KEY, timeout=0.3)
    try:
        sandbox.set_faults(timeout=1.0, timeout_s=1.0, only=["users/ping2"])
        with pytest.raises(requests.exceptions.Timeout):
            client.users.ping2()
    finally:
        sandbox.set_faults()


# ------------------------------------------------------------------------------ durability


def test_messages_survive_a_restart(tmp_path):
    with run_sandbox(tmp_path, api_keys=[KEY]) as first:
        client = first.client(KEY)
        client.templates.add({"name": "t", "code": "<p>x</p>", "from_email": "a@b.example"})
        sent = client.messages.send_template(
            {
                "template_name": "t",
                "template_content": [],
                "message": {"to": [{"email": "keep@x.example"}]},
            }
        )
    with run_sandbox(tmp_path, api_keys=[KEY]) as second:
        info = second.client(KEY).messages.info({"id": sent[0]["_id"]})
        assert info["email"] == "keep@x.example"
        assert info["state"] == "sent"


def test_admin_health_and_unimplemented_operation(sandbox, client):
    with urllib.request.urlopen(sandbox.base_url + "/sandbox/health", timeout=5) as response:
        assert json.loads(response.read())["ok"] is True
    error = error_of(client.ips.list)
    assert error.text["name"] == "ValidationError"
    assert "does not implement ips/list" in error.text["message"]
    wait_until(lambda: True, what="nothing")


def test_automatic_events_and_index_all_metadata(tmp_path):
    from signalmail.sandbox.app import AutoEvents

    receiver = Receiver()
    try:
        with run_sandbox(
            tmp_path,
            api_keys=[KEY],
            webhook_urls=[receiver.url],
            webhook_key="whsec",
            auto_events=AutoEvents(open=1.0, click=1.0),
            index_all_metadata=True,
            seed=3,
        ) as running:
            client = running.client(KEY)
            client.templates.add(
                {
                    "name": "t",
                    "code": '<a href="https://shop.example/x">x</a>',
                    "from_email": "a@b.example",
                }
            )
            results = client.messages.send_template(
                {
                    "template_name": "t",
                    "template_content": [],
                    "message": {
                        "to": [{"email": "r1@x.example"}, {"email": "r2@x.example"}],
                        "metadata": {"campaign": "c1", "trigger_id": "shared"},
                        "recipient_metadata": [
                            {"rcpt": "r2@x.example", "values": {"trigger_id": "t-2"}}
                        ],
                    },
                }
            )
            running.wait_delivered()
            events = [(e["event"], e["_id"]) for e in receiver.events()]
            for result in results:
                assert [kind for kind, message_id in events if message_id == result["_id"]] == [
                    "send",
                    "open",
                    "click",
                ]
            assert all(
                verify_signature("whsec", receiver.url, p["params"], p["signature"])
                for p in receiver.posts
            )
            clicks = client.messages.info({"id": results[0]["_id"]})["clicks_detail"]
            assert [c["url"] for c in clicks] == ["https://shop.example/x"]
            # no metadata/add needed with index_all_metadata; recipient_metadata overrides
            found = client.messages.search({"query": "u_trigger_id:t-2"})
            assert [m["email"] for m in found] == ["r2@x.example"]
            assert found[0]["metadata"] == {"campaign": "c1", "trigger_id": "t-2"}
    finally:
        receiver.close()
