"""``clarion web``: Clarion over HTTP.

* the application API (``/v1/notifications``, ``/v1/events``), for platforms
  not written in Python, authenticated by API keys (:mod:`models.apikeys`);
* the inbox API (``/v1/inbox``), for the bidders' web and mobile apps,
  authenticated by the gateway's HS256 JWT;
* the operators' console (``/console``), server-rendered HTML.

One FastAPI application (:func:`clarion.web.app.create_app`) on uvicorn
(:func:`clarion.web.server.serve`). Every route is a plain function run in
uvicorn's thread pool over Clarion's synchronous code: the same ``notify``,
``publish_event`` and operators' commands the Python API and the CLI use.
"""
