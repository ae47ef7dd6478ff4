"""Realistic mock orders and payments, from Faker, reproducible with a seed.

Faker is slow per call (tens of microseconds for an address), so a pool of addresses and items
is drawn once and messages pick from it with a seeded RNG: fast enough for the producers'
`--rate 0`, and the same seed gives the same messages. A payment carries a card's last four
digits only, drawn directly: no full card number is ever generated.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from faker import Faker

__all__ = ["ORDER_STATUSES", "PAYMENT_METHODS", "PAYMENT_STATUSES", "MockData"]

PRODUCTS = (
    "running shoes",
    "wireless earbuds",
    "backpack",
    "coffee grinder",
    "desk lamp",
    "yoga mat",
    "water bottle",
    "phone case",
    "mechanical keyboard",
    "sunglasses",
    "cookware set",
    "hoodie",
    "smart watch",
    "board game",
    "throw pillow",
    "electric kettle",
    "notebook",
    "bike helmet",
)
ORDER_STATUSES = ("pending", "confirmed", "shipped", "delivered", "cancelled")
PAYMENT_METHODS = ("credit_card", "debit_card", "paypal", "apple_pay", "google_pay", "bank_transfer")
PAYMENT_STATUSES = ("completed", "completed", "completed", "pending", "failed")
_SEEDED_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class MockData:
    """Makes order and payment dicts shaped like the topics' JSON messages."""

    def __init__(self, seed: int | None = None, pool_size: int = 500) -> None:
        self._rng = random.Random(seed)
        fake = Faker()
        if seed is not None:
            fake.seed_instance(seed)
        self._addresses = [fake.address().replace("\n", ", ") for _ in range(pool_size)]
        self._items = [f"{fake.color_name()} {self._rng.choice(PRODUCTS)}" for _ in range(pool_size)]
        # With a seed, dates too are reproducible; without one they are around now.
        self._epoch = _SEEDED_EPOCH if seed is not None else datetime.now(UTC)

    def _timestamp(self) -> str:
        moment = self._epoch + timedelta(
            seconds=self._rng.randrange(86_400), microseconds=self._rng.randrange(1_000_000)
        )
        return moment.isoformat(timespec="milliseconds")

    def order(self, order_id: int) -> dict[str, object]:
        rng = self._rng
        return {
            "order_id": order_id,
            "customer_id": rng.randrange(1, 50_000),
            "item": rng.choice(self._items),
            "quantity": rng.randrange(1, 6),
            "price": round(rng.uniform(2.0, 500.0), 2),
            "shipping_address": rng.choice(self._addresses),
            "order_status": rng.choice(ORDER_STATUSES),
            "creation_date": self._timestamp(),
        }

    def payment(self, payment_id: int, order_id: int) -> dict[str, object]:
        rng = self._rng
        return {
            "payment_id": payment_id,
            "order_id": order_id,
            "payment_method": rng.choice(PAYMENT_METHODS),
            "card_last_four": f"{rng.randrange(10_000):04d}",
            "payment_status": rng.choice(PAYMENT_STATUSES),
            "payment_datetime": self._timestamp(),
        }
