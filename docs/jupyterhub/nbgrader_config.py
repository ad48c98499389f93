# nbgrader's settings for everyone on the hub (students, teacher, graders), installed as
# /etc/jupyter/nbgrader_config.py (or <environment>/etc/jupyter/nbgrader_config.py).
# Each course folder keeps its own nbgrader_config.py (this repository's) for the rest.
import os

from nbgrader.auth import JupyterHubAuthPlugin

c = get_config()  # noqa: F821 (nbgrader provides get_config)

# The exchange: released labs, submissions and feedback pass through this folder. It must be
# mode 0777 exactly (nbgrader checks) and reachable by every user.
c.Exchange.root = os.environ.get("MAILLAB_EXCHANGE", "/srv/nbgrader/exchange")
# Several courses (English, Greek) share one exchange: each gets its own sub-folder, and each
# student sees the courses whose JupyterHub group (nbgrader-<course>) they belong to.
c.Exchange.path_includes_course = True
c.Authenticator.plugin_class = JupyterHubAuthPlugin
c.NbGrader.course_titles = {"maillab": "maillab: how e-mail works",
                            "maillab-el": "maillab: πώς λειτουργεί το ηλεκτρονικό ταχυδρομείο"}
