"""target-mailchimp-transactional: due emails out through Mandrill templates, exactly once."""

from target_mailchimp_transactional.client import MandrillClient, MandrillError
from target_mailchimp_transactional.dispatch import Accepted
from target_mailchimp_transactional.ledger import Ledger, tombstone_digest
from target_mailchimp_transactional.target import TargetMailchimpTransactional

__all__ = [
    "Accepted",
    "Ledger",
    "MandrillClient",
    "MandrillError",
    "TargetMailchimpTransactional",
    "tombstone_digest",
]
