# The module is keyledger_client.events.subjects itself (events/__init__.py aliases it).
from keyledger_client.events.subjects import *  # noqa: F403
