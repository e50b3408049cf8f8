"""The status web app: Flask app factory (:func:`web.app.create_app`), JSON API, page.

Run it with ``obpipe web`` / ``python -m web`` (:mod:`web.service`, waitress).
"""
