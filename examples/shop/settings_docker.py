"""shop.settings for the container of docker-compose.yml: ALLOWED_HOSTS from the environment.

SHOP_ALLOWED_HOSTS is a comma-separated list of host names (the Host header without its port);
unset, the shop answers to the same names as outside a container.
"""

import os

from shop.settings import *  # noqa: F403

ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("SHOP_ALLOWED_HOSTS", ",".join(ALLOWED_HOSTS)).split(",")  # noqa: F405
    if host.strip()
]
