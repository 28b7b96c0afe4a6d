"""Transitional: ``realtime.gateway`` still imports ``Repository`` from here.

Persistence now lives with its owner (``models.claims``, ``models.writeback``,
``models.rollup``, ``models.deadletters``, ``models.inbox``). The gateway only
ever used the inbox's two methods; once it imports :class:`models.inbox.Inbox`
this module goes. Nothing else may import it.
"""

from __future__ import annotations

from models.inbox import Inbox as Repository

__all__ = ["Repository"]
