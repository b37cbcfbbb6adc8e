"""The target end to end: real mailchimp-transactional client -> `signalmail sandbox` over HTTP.

Also sends Email Sent events with the real rudder-sdk-python client to a recording data plane.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.helpers.mailchimp_target import (
    API_KEY,
    data_plane,
    iso,
    ledger_rows,
    run_target,
    sandbox_messages,
    seed_templates,
    singer_lines,
    target_config,
    trigger,
)
from tests.helpers.servers import wait_until

run_sandbox = pytest.importorskip("signalmail.sandbox.testing").run_sandbox


@pytest.fixture
def sandbox(tmp_path):
    with run_sandbox(tmp_path / "sandbox", api_keys=[API_KEY], search_calls_per_minute=600) as sb:
        seed_templates(sb)
        yield sb


def by_trigger(messages):
    return {m["metadata"]["trigger_id"]: m for m in messages}


def test_sends_each_trigger_once_with_metadata_tags_and_personalisation(sandbox, tmp_path):
    plane_key = "wk-test"
    with data_plane(tmp_path / "spool", plane_key) as plane:
        cfg = target_config(sandbox, tmp_path, max_recipients_per_call=25,
                            data_plane_url=plane.url, write_key=plane_key)  # fmt: skip
        client = sandbox.client(API_KEY)
        client.rejects.add({"email": "user7@example.com", "comment": "unsubscribed"})
        rows = [trigger(i) for i in range(60)]
        rows += [trigger(i, "post_purchase", payload={"order_id": f"o{i}", "products": []})
                 for i in range(5)]  # payload as an object, not JSON text  # fmt: skip
        rows += [trigger(100, holdout=True), trigger(101, expires_at=iso(-1)),
                 trigger(102, email="broken@")]  # fmt: skip
        run_target(cfg, singer_lines(rows))

        messages = sandbox_messages(sandbox)
        got = by_trigger(messages)
        assert len(messages) == 65 == len(got)  # one message per trigger
        ledger = ledger_rows(cfg)
        assert ledger["cart_abandonment:7"]["state"] == "rejected"
        assert ledger["cart_abandonment:7"]["reject_reason"]
        assert ledger["cart_abandonment:100"]["state"] == "held_out"
        assert ledger["cart_abandonment:101"]["reject_reason"] == "expired"
        assert ledger["cart_abandonment:102"]["state"] == "invalid"
        for tid in ("cart_abandonment:100", "cart_abandonment:101", "cart_abandonment:102"):
            assert tid not in got
        for i in range(60):
            tid = f"cart_abandonment:{i}"
            msg, row = got[tid], ledger[tid]
            assert msg["email"] == f"user{i}@example.com"
            assert msg["metadata"]["campaign"] == "cart_abandonment"
            assert msg["metadata"]["user_id"] == f"user-{i}"
            assert msg["metadata"]["variant"] == row["variant"]
            assert msg["tags"] == ["cart_abandonment"]
            assert row["mandrill_id"] == msg["_id"]
            expected = {"control": "You left something in your cart",
                        "urgency": "Your cart is about to expire"}[row["variant"]]  # fmt: skip
            assert msg["subject"] == expected
            if i != 7:
                assert row["state"] in {"sent", "queued"}
        html = client.messages.content({"id": got["cart_abandonment:3"]["_id"]})["html"]
        assert "Hi Ann3" in html
        assert "Shoe 3" in html
        assert "utm_campaign=cart_abandonment" in html  # Jinja2 block in its mc:edit region
        assert "default cart" not in html
        assert got["post_purchase:2"]["subject"] == "Thanks for your order"

        # Email Sent: one per accepted message, with the Mandrill id; flushed before exit.
        accepted = {t for t, r in ledger.items() if r["state"] in {"sent", "queued"}}
        wait_until(
            lambda: (
                len([e for e in plane.events if e.get("event") == "Email Sent"]) >= len(accepted)
            ),
            timeout=10,
            what="Email Sent events in the spool",
        )
        sent = [e for e in plane.events if e.get("event") == "Email Sent"]
        assert len(sent) == len(accepted)  # one per message, no duplicates
        assert {e["properties"]["trigger_id"] for e in sent} == accepted
        for event in sent:
            props = event["properties"]
            assert props["mandrill_id"] == ledger[props["trigger_id"]]["mandrill_id"]
            assert event["userId"] == props["user_id"]
            assert {"campaign", "variant", "template", "email"} <= set(props)

        # A second run with the same input (the tap re-delivers) sends nothing new.
        run_target(cfg, singer_lines(rows))
        assert len(sandbox_messages(sandbox)) == 65


def test_hostile_links_and_names_arrive_at_mandrill_sanitised(sandbox, tmp_path):
    """What a client put in an event, as Mandrill receives it: only http(s) links, and a
    recipient name that cannot open a second header line."""
    payload = {
        "products": [
            {"product_id": "p1", "name": "Shoe", "price": 5, "quantity": 1,
             "url": "javascript:alert(document.cookie)", "image_url": "data:image/svg+xml,<svg/>"},
            {"product_id": "p2", "name": "Sock", "price": 3, "quantity": 1,
             "url": "https://shop.example.com/p/2", "image_url": "https://img.example.com/2.png"},
        ],
        "cart_total": 8, "currency": "EUR", "cart_url": " JavaScript:alert(1)",
        "recommendations": [],
    }  # fmt: skip
    row = trigger(1, first_name="Eve\r\nBcc: victim@example.com", payload=json.dumps(payload))
    run_target(target_config(sandbox, tmp_path), singer_lines([row]))

    (message,) = sandbox_messages(sandbox)
    content = sandbox.client(API_KEY).messages.content({"id": message["_id"]})
    html = content["html"].lower()
    assert "javascript:" not in html
    assert "data:image" not in html
    assert "https://shop.example.com/p/2" in html  # the good link of the same email stays
    name = content["to"].get("name", "")
    assert "\r" not in name
    assert "\n" not in name
    assert not any("bcc" in name.lower() for name in content["headers"])
    assert content["to"]["email"] == "user1@example.com"


def test_unknown_template_fails_that_campaign_and_others_go_on(sandbox, tmp_path):
    sandbox.client(API_KEY).templates.delete({"name": "re-engagement"})
    cfg = target_config(sandbox, tmp_path)
    rows = [trigger(i, "re_engagement") for i in range(3)] + [trigger(i) for i in range(3)]
    run_target(cfg, singer_lines(rows))
    ledger = ledger_rows(cfg)
    assert [ledger[f"re_engagement:{i}"]["state"] for i in range(3)] == ["failed"] * 3
    assert "Unknown_Template" in ledger["re_engagement:0"]["error"]
    assert [ledger[f"cart_abandonment:{i}"]["state"] for i in range(3)] == ["sent"] * 3
    assert Counter(m["metadata"]["campaign"] for m in sandbox_messages(sandbox)) == {
        "cart_abandonment": 3
    }


def test_template_that_cannot_render_fails_that_campaign_and_others_go_on(sandbox, tmp_path):
    # `{{url}}` inside #each calls Mandrill's url helper (helpers win over the item's field) with
    # no argument: the template parses, so Mandrill stores it, but no send can render it.
    client = sandbox.client(API_KEY)
    client.templates.update({
        "name": "re-engagement", "publish": True,
        "code": '<p>{{#each recommendations}}<a href="{{url}}">{{name}}</a>{{/each}}</p>'
                '<a href="*|UNSUB|*">unsubscribe</a>',
    })  # fmt: skip
    cfg = target_config(sandbox, tmp_path, max_recipients_per_call=2)
    rows = [trigger(i, "re_engagement") for i in range(5)] + [trigger(i) for i in range(3)]
    run_target(cfg, singer_lines(rows))
    ledger = ledger_rows(cfg)
    for i in range(5):
        assert ledger[f"re_engagement:{i}"]["state"] == "failed"
    assert "Invalid_Template" in ledger["re_engagement:0"]["error"]
    assert "helper url needs 1 argument" in ledger["re_engagement:0"]["error"]
    assert [ledger[f"cart_abandonment:{i}"]["state"] for i in range(3)] == ["sent"] * 3
    assert Counter(m["metadata"]["campaign"] for m in sandbox_messages(sandbox)) == {
        "cart_abandonment": 3
    }


def test_mailchimp_template_id_uses_send_mc_template(sandbox, tmp_path):
    seeded = sandbox.seed_mc_templates([{
        "mc_template_name": "Welcome back", "subject": "Welcome back {{first_name}}",
        "from_email": "hello@shop.example.com", "code": "<p>Hello {{first_name}}</p>",
        "publish": True,
    }])  # fmt: skip
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "re_engagement.yml").write_text(
        "campaign: re_engagement\n"
        f"mc_template_id: {seeded[0]['mc_template_id']}\n"
        "from_email: hello@shop.example.com\nmerge_vars: [first_name]\ntags: [winback]\n"
    )
    cfg = target_config(sandbox, tmp_path, campaigns_dir=str(campaigns))
    run_target(cfg, singer_lines([trigger(1, "re_engagement")]))
    (msg,) = sandbox_messages(sandbox)
    assert msg["metadata"]["trigger_id"] == "re_engagement:1"
    assert msg["tags"] == ["winback"]
    assert ledger_rows(cfg)["re_engagement:1"]["template"].startswith("mc:")


def test_dry_run_calls_nothing_and_writes_outbox(sandbox, tmp_path):
    outbox = tmp_path / "outbox"
    cfg = target_config(sandbox, tmp_path, dry_run=True, outbox_dir=str(outbox))
    cfg.pop("api_key")
    run_target(cfg, singer_lines([trigger(i) for i in range(4)]))
    assert sandbox_messages(sandbox) == []
    assert not (tmp_path / "ledger.duckdb").exists()
    bodies = [json.loads(p.read_text()) for p in outbox.rglob("call-*.json")]
    assert sum(len(b["body"]["message"]["to"]) for b in bodies) == 4
    assert all(b["endpoint"] == "messages/send-template" for b in bodies)
    assert len(list(outbox.rglob("*.html"))) == 4


def test_duplicates_within_a_run_across_batches_are_sent_once(sandbox, tmp_path):
    # batch_size_rows=4: the repeats land in later drained batches while earlier calls may still
    # be in flight; the ledger claim, not the batch, must stop the second send.
    cfg = target_config(sandbox, tmp_path, batch_size_rows=4, max_recipients_per_call=2)
    rows = [trigger(i) for i in range(6)]
    repeats = [trigger(i % 6) for i in range(14)]  # each trigger 2-3 more times
    same_person = [trigger(f"{i}b", email=f"user{i}@example.com") for i in range(3)]
    run_target(cfg, singer_lines(rows + repeats + same_person))
    per_trigger = Counter(m["metadata"]["trigger_id"] for m in sandbox_messages(sandbox))
    expected = {f"cart_abandonment:{i}": 1 for i in range(6)}
    expected |= {f"cart_abandonment:{i}b": 1 for i in range(3)}  # a new trigger is a new email
    assert per_trigger == Counter(expected)
    assert {r["attempts"] for r in ledger_rows(cfg).values()} == {1}


def test_batch_message_stops_the_run_before_its_state_is_emitted(sandbox, tmp_path, capfd):
    # singer-sdk sinks would drop a BATCH silently and let its STATE through; the tap's bookmark
    # would then skip triggers that were never sent.
    cfg = target_config(sandbox, tmp_path)
    batch = {"type": "BATCH", "stream": "email_triggers",
             "encoding": {"format": "jsonl", "compression": "gzip"},
             "manifest": [f"file://{tmp_path}/batch-1.jsonl.gz"]}  # fmt: skip
    lines = singer_lines(
        [trigger(i) for i in range(3)],
        extra=[
            {"type": "STATE", "value": {"bookmark": "before-batch"}},
            batch,
            {"type": "STATE", "value": {"bookmark": "after-batch"}},
        ],
    )
    with pytest.raises(ValueError, match="BATCH message for stream 'email_triggers' refused"):
        run_target(cfg, lines)
    assert "after-batch" not in capfd.readouterr().out
    # Whatever went out before the refusal is recorded; the rerun (tap restarts from the last
    # emitted bookmark, without batch_config) sends the rest, nothing twice.
    assert {r["state"] for r in ledger_rows(cfg).values()} <= {"sent", "queued"}
    run_target(cfg, singer_lines([trigger(i) for i in range(3)]))
    per_trigger = Counter(m["metadata"]["trigger_id"] for m in sandbox_messages(sandbox))
    assert per_trigger == Counter({f"cart_abandonment:{i}": 1 for i in range(3)})
