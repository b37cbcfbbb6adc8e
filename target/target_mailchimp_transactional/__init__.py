"""target-mailchimp-transactional: due emails out through Mandrill templates, exactly once."""

from target_mailchimp_transactional.blocks import BlockRenderer, BlockRenderError
from target_mailchimp_transactional.campaigns import (
    Campaign,
    CampaignConfigError,
    Variant,
    block_var_name,
    load_campaigns,
)
from target_mailchimp_transactional.client import (
    AmbiguousError,
    InvalidKeyError,
    MandrillClient,
    MandrillError,
    RetryableError,
    TemplateError,
)
from target_mailchimp_transactional.content import (
    UNUSABLE_VALUE_ERRORS,
    ContentSettings,
    PayloadError,
    RecipientContent,
    recipient_content,
)
from target_mailchimp_transactional.dispatch import Accepted, Dispatcher
from target_mailchimp_transactional.ledger import Ledger, tombstone_digest
from target_mailchimp_transactional.target import TargetMailchimpTransactional

__all__ = [
    "UNUSABLE_VALUE_ERRORS",
    "Accepted",
    "AmbiguousError",
    "BlockRenderError",
    "BlockRenderer",
    "Campaign",
    "CampaignConfigError",
    "ContentSettings",
    "Dispatcher",
    "InvalidKeyError",
    "Ledger",
    "MandrillClient",
    "MandrillError",
    "PayloadError",
    "RecipientContent",
    "RetryableError",
    "TargetMailchimpTransactional",
    "TemplateError",
    "Variant",
    "block_var_name",
    "load_campaigns",
    "recipient_content",
    "tombstone_digest",
]
