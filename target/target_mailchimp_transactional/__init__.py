"""target_mailchimp_transactional."""
