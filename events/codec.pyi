# The module is keyledger_client.events.codec itself (events/__init__.py aliases it).
from keyledger_client.events.codec import *  # noqa: F403
