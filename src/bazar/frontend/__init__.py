"""The front end: the only public process. `views.py` (the view manager), `cache.py` and
`balancer.py` are pure; `service.py` is the HTTP service around them, `membership.py` its
admin routes, `openapi.py` and `pages.py` its documents and pages."""
