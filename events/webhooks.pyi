# The module is keyledger_client.events.webhooks itself (events/__init__.py aliases it).
from keyledger_client.events.webhooks import *  # noqa: F403
