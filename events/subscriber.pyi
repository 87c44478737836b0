# The module is keyledger_client.events.subscriber itself (events/__init__.py aliases it).
from keyledger_client.events.subscriber import *  # noqa: F403
