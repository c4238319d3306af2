"""``imgclust review OUT_DIR``: a local web page to look at and correct the clusters of a run.

The server (:mod:`imgclust.review.server`) uses the standard library only; the page
(``static/``) is plain HTML, CSS and JavaScript with no build step and nothing from the network.
Every edit goes through :mod:`imgclust.edits`.
"""

from .server import ReviewServer

__all__ = ["ReviewServer"]
