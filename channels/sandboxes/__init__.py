"""Local servers that speak the providers' wire protocols, for tests and the demo.

Each sandbox is a real HTTP (or SMTP) server on 127.0.0.1 that the real SDK
talks to. Knobs make it slow or make it fail: see :class:`~channels.sandboxes.http.Fault`.
"""
