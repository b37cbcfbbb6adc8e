"""Simulated shoppers: who they are, whether they ever sign in, how often they come back.

The mix matters downstream: consent logic needs opted-out and never-identified shoppers,
re-engagement needs shoppers who go quiet for weeks, and the email loop needs shoppers who click.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

FIRST_NAMES: tuple[str, ...] = (
    "Ada",
    "Bea",
    "Carlos",
    "Dana",
    "Eitan",
    "Fatima",
    "Gus",
    "Hana",
    "Ines",
    "Jonas",
    "Kemal",
    "Lena",
    "Mateo",
    "Nia",
    "Oskar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tomoko",
    "Uma",
    "Viktor",
    "Wei",
    "Ximena",
    "Yusuf",
    "Zoe",
)
#: (IANA time zone, locale, share of shoppers)
REGIONS: tuple[tuple[str, str, float], ...] = (
    ("America/New_York", "en-US", 0.22),
    ("America/Chicago", "en-US", 0.10),
    ("America/Los_Angeles", "en-US", 0.14),
    ("Europe/London", "en-GB", 0.12),
    ("Europe/Berlin", "de-DE", 0.10),
    ("Europe/Paris", "fr-FR", 0.08),
    ("Europe/Madrid", "es-ES", 0.05),
    ("Asia/Tokyo", "ja-JP", 0.06),
    ("Australia/Sydney", "en-AU", 0.05),
    ("America/Sao_Paulo", "pt-BR", 0.08),
)
USER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/124.0 Mobile Safari/537.36",
)

#: shares of the population (documented in docs/simulate.md)
SHARE_NEVER_IDENTIFY = 0.25
SHARE_OPTED_OUT = 0.20  # of the shoppers who identify
SHARE_GOES_QUIET = 0.15
SHARE_EMAIL_CLICKER = 0.35  # of the opted-in shoppers
#: local hours a shopper's routine may centre on (commute, lunch, evening) and how often it holds
ROUTINE_HOURS: tuple[int, ...] = (8, 12, 13, 19, 20, 21)
ROUTINE_SHARE = (0.3, 0.8)  # of a shopper's sessions, uniform in this range


@dataclass(slots=True)
class Shopper:
    """One simulated person and the device (anonymousId) they browse from."""

    index: int
    user_id: str
    anonymous_id: str
    email: str
    first_name: str
    timezone: str
    locale: str
    email_opt_in: bool
    identifies: bool
    sessions_per_week: float
    quiet_after_day: float | None  # day offset after which the shopper stops visiting
    quiet_days: float  # how long the silence lasts (may outlast the simulation)
    clicks_emails: bool
    user_agent: str
    ip: str
    #: local hour most of this shopper's visits start near, and the share of visits that do
    routine_hour: int = 20
    routine_share: float = 0.0


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_shopper(seed: int, index: int, days: float) -> Shopper:
    """Build shopper `index` purely from (seed, index), so streams merge deterministically."""
    rng = random.Random(f"shopper:{seed}:{index}")  # noqa: S311 (simulation, not security)
    first_name = rng.choice(FIRST_NAMES)
    zones = rng.choices(REGIONS, weights=[r[2] for r in REGIONS])[0]
    identifies = rng.random() >= SHARE_NEVER_IDENTIFY
    email_opt_in = identifies and rng.random() >= SHARE_OPTED_OUT
    goes_quiet = rng.random() < SHARE_GOES_QUIET
    return Shopper(
        index=index,
        user_id=f"u-{seed}-{index:06d}",
        anonymous_id=_uuid(rng),
        email=f"{first_name.lower()}.{index}@example.com",
        first_name=first_name,
        timezone=zones[0],
        locale=zones[1],
        email_opt_in=email_opt_in,
        identifies=identifies,
        # heavy-tailed visit frequency: most shoppers come rarely, a few come daily
        sessions_per_week=min(14.0, rng.lognormvariate(0.3, 0.8)),
        quiet_after_day=rng.uniform(0.1, 0.5) * days if goes_quiet else None,
        quiet_days=rng.uniform(14.0, 35.0),
        clicks_emails=email_opt_in and rng.random() < SHARE_EMAIL_CLICKER,
        user_agent=rng.choice(USER_AGENTS),
        # TEST-NET-3 (RFC 5737): never a real address
        ip=f"203.0.113.{rng.randrange(1, 255)}",
        # drawn last, so every attribute above is what it was before routines existed
        routine_hour=rng.choice(ROUTINE_HOURS),
        routine_share=rng.uniform(*ROUTINE_SHARE),
    )
