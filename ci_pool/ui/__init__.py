"""The web view under ``/ui/``: server-rendered pages over the same service layer and access
rules as the API, a session cookie in exchange for an API token, CSRF on every form, and a
Content-Security-Policy that allows no inline script or style."""
