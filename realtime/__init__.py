"""Real time: the event outbox (:mod:`realtime.outbox`) and the WebSocket gateway.

Kept empty of imports on purpose: a delivery channel imports the leaf
:mod:`realtime.wire` (Redis channel names, message format) without loading
the gateway, Redis or the database models.
"""
