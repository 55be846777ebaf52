"""What every table model shares: the declarative base (one metadata for every table, which the
migrations are checked against) and the column types used across them."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, DateTime, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

JsonColumn = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
EventId = BigInteger().with_variant(Integer(), "sqlite")
Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    pass
