"""`signalmail forget`: erase one person everywhere the pipeline keeps them.

In order, so that a failure half-way leaves the person never mailed:
1. a tombstone in the ledger database (one-way hashes of their user ids and addresses): the
   email target drops any trigger of theirs from then on, whatever the warehouse still holds;
2. Mandrill's rejects list (`rejects/add`), so Mandrill itself refuses to send to them;
3. their rows in the warehouse's raw and derived tables, their purchase score and their rows
   in the send ledger;
4. their events in the published spool segments.

Mandrill is asked for each address on its own: an address it refuses (malformed, say) is
named in the report and does not keep the others off its rejects list.

Run it with the watch stopped on DuckDB (one process may write a DuckDB file). Events the
collector received but has not published yet reach the warehouse later: the tombstone keeps
them from causing email, and running `forget` again removes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from target_mailchimp_transactional import Ledger, MandrillClient, MandrillError

from signalmail.privacy.erase import delete_person
from signalmail.privacy.people import Person, find_person
from signalmail.privacy.spool import SpoolChange, remove_events
from signalmail.watch.settings import INTENT_SCHEMA, LEDGER_SCHEMA, RAW_SCHEMA, WatchSettings


@dataclass
class ForgetReport:
    """What `forget` found and removed."""

    person: Person
    tombstones_added: int = 0
    rejected_at_mandrill: list[str] = field(default_factory=list)
    #: why Mandrill's rejects list was not updated at all (no key), or for which addresses
    mandrill_error: str | None = None
    warehouse_rows: dict[str, int] = field(default_factory=dict)
    ledger_rows: int = 0
    spool: SpoolChange = field(default_factory=SpoolChange)

    def lines(self) -> list[str]:
        """Render the report as a person reads it (no identifier is printed)."""
        person = self.person
        out = [
            f"identifiers found: {len(person.user_ids)} user id(s), "
            f"{len(person.anonymous_ids)} anonymous id(s), {len(person.emails)} address(es)",
            f"tombstones added: {self.tombstones_added}",
        ]
        if self.mandrill_error:
            out.append(f"Mandrill rejects list: NOT updated ({self.mandrill_error})")
        else:
            out.append(f"Mandrill rejects list: {len(self.rejected_at_mandrill)} address(es)")
        for table, count in sorted(self.warehouse_rows.items()):
            out.append(f"  {count:>8}  rows from {table}")
        out.append(f"  {self.ledger_rows:>8}  rows from the send ledger")
        out.append(
            f"spool: {self.spool.events_removed} event(s) removed from "
            f"{self.spool.segments_rewritten} rewritten and {self.spool.segments_deleted} "
            f"deleted segment(s) of {self.spool.segments_read}"
        )
        for path in self.spool.damaged:
            out.append(f"  damaged segment, rewritten without its unreadable tail: {path}")
        return out


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def forget(
    settings: WatchSettings,
    user_id: str | None = None,
    email: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ForgetReport:
    """Erase the person with this user id and/or address (see the module docstring)."""
    if not user_id and not email:
        raise ValueError("forget needs a user id or an email address")
    warehouse = _engine(settings.warehouse_url())
    try:
        with warehouse.connect() as conn:
            person = find_person(conn, RAW_SCHEMA, user_id, email, settings.dbt_schema)
        report = ForgetReport(person)

        ledger = Ledger(settings.ledger_url(), LEDGER_SCHEMA)
        try:
            report.tombstones_added = ledger.add_tombstones(person.user_ids, person.emails)
            if settings.mandrill_api_key:
                client = MandrillClient(settings.mandrill_api_key, settings.mandrill_base_url)
                refused = 0
                for address in sorted(person.emails):
                    try:
                        client.reject_add(address, "signalmail forget: erasure request")
                    except MandrillError as exc:
                        refused += 1
                        report.mandrill_error = f"{refused} address(es) refused; last: {exc}"
                    else:
                        report.rejected_at_mandrill.append(address)
            else:
                report.mandrill_error = "no SIGNALMAIL_MANDRILL_API_KEY"
            report.ledger_rows = ledger.forget(person.user_ids, person.emails)
        finally:
            ledger.close()

        with warehouse.begin() as conn:
            for schema in (RAW_SCHEMA, settings.dbt_schema, INTENT_SCHEMA):
                report.warehouse_rows.update(delete_person(conn, schema, person))
    finally:
        warehouse.dispose()
    report.spool = remove_events(
        settings.spool_location,
        person.user_ids | person.anonymous_ids,
        person.emails,
        storage_options,
        settings.logs_folder,
    )
    return report
